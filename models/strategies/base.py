"""The strategy protocol: a penalty applied straight to gradients plus consolidation hooks."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Strategy(Protocol):
    name: str

    def penalty(self, model: nn.Module) -> Tensor:
        """The scalar penalty value at the model's current parameters (for reporting)."""
        ...

    def apply_to_grads(self, model: nn.Module) -> None:
        """Add the penalty's gradient into each p.grad, without building an autograd graph."""
        ...

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None: ...

    def grow(self, model: nn.Module) -> None:
        """Follow parameters that grew (new head rows): old state kept, zeros for new entries."""
        ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, d: dict[str, Tensor]) -> None: ...


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters a strategy regularises: trainable ones only, never the standardiser buffers."""
    return {k: p for k, p in model.named_parameters() if p.requires_grad}
