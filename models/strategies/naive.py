"""Plain fine-tuning: no penalty, no state (replay, if any, comes from the buffer)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Naive:
    name = "naive"

    def penalty(self, model: nn.Module) -> Tensor:
        return torch.zeros((), device=next(model.parameters()).device)

    def apply_to_grads(self, model: nn.Module) -> None:
        return None

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        return None

    def grow(self, model: nn.Module) -> None:
        return None

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        if d:
            raise ValueError(f"naive strategy has no state, got keys {sorted(d)}")
