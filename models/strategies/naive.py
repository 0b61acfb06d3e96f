"""Plain fine-tuning: no penalty, no state (replay, if any, comes from the buffer)."""

from __future__ import annotations

from torch import Tensor

from models.strategies.base import StrategyBase, check_factor


class Naive(StrategyBase):
    name = "naive"

    def relax(self, factor: float) -> None:
        check_factor(factor)  # nothing to relax, but a bad factor is still a caller's bug

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        if d:
            raise ValueError(f"naive strategy has no state, got keys {sorted(d)}")
