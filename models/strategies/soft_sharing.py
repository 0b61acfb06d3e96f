"""MNEMO_HEADS=soft: the penalty that keeps every tag's copy of the trunk near their mean
(models/soft_sharing.py), wrapped around the deployment's own strategy (MNEMO_STRATEGY).

Soft sharing is a head mode, not a strategy: it composes with any of them. So it wraps one, and
the learner drives it through the same protocol: every hook goes to the inner strategy, and
apply_to_grads and penalty add the sharing penalty. Its strength is a setting, not state (like
every strategy's parameters), and relax() (a drift) weakens only the inner strategy: a drift
says old knowledge may be wrong, not that tags stopped being related.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from models.soft_sharing import pull_toward_mean, sharing_penalty
from models.strategies.base import Strategy

# Measured on the soft-sharing benchmark (service/bench/soft.py, BENCHMARKS.md).
DEFAULT_STRENGTH = 10.0


class SoftSharing:
    def __init__(self, inner: Strategy, strength: float = DEFAULT_STRENGTH) -> None:
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"soft sharing strength must be finite and >= 0, got {strength}")
        self.inner, self.strength = inner, float(strength)
        self.name = inner.name  # what a learner state records: the inner strategy

    def __getattr__(self, name: str) -> Any:
        # Anything else (scale, growth_record, units_wanted, ...) is the inner strategy's.
        if name == "inner":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def scale(self) -> float:
        return self.inner.scale  # type: ignore[attr-defined, no-any-return]

    @scale.setter
    def scale(self, value: float) -> None:
        self.inner.scale = value  # type: ignore[attr-defined]

    def penalty(self, model: nn.Module) -> Tensor:
        own = sharing_penalty(model)
        inner = self.inner.penalty(model)
        return inner if own is None else inner + self.strength * own

    def before_step(self, model: nn.Module) -> None:
        self.inner.before_step(model)

    def loss_term(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor | None:
        return self.inner.loss_term(model, x, logits)

    def apply_to_grads(self, model: nn.Module) -> None:
        self.inner.apply_to_grads(model)
        pull_toward_mean(model, self.strength)

    def after_step(self, model: nn.Module) -> None:
        self.inner.after_step(model)

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        self.inner.consolidate(model, x, y)

    def on_publish(self, model: nn.Module) -> None:
        self.inner.on_publish(model)

    def relax(self, factor: float) -> None:
        self.inner.relax(factor)

    def grow(self, model: nn.Module) -> None:
        self.inner.grow(model)

    def state_dict(self) -> dict[str, Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        self.inner.load_state_dict(d)
