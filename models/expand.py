"""Expandable network (after DEN, Yoon et al. 2018), MNEMO_STRATEGY=expand.

When the loss on new data stays high over consolidations (high at one and still at the next;
the drift response consolidates too, on the newest data), every hidden layer gains units; for
a while the old weights train at a fraction of the rate (the new units take the change), and a
uniform quadratic penalty holds the old weights near their consolidated values. Growth is
bounded (MAX_EVENTS) and the widths travel in the model config, so every version records the
architecture it was published with (and its metadata the growths, service/worker/loop.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.nets import MLP, MultiHeadMLP
from models.strategies.base import detached_copy, grads_of, trainable_parameters
from models.strategies.quadratic import QuadraticPenalty

UNITS = 16  # units added to every hidden layer per growth
MAX_EVENTS = 8  # growths at most, over the deployment's life
HIGH_LOSS = 0.15  # cross-entropy above which the loss counts as high (chosen on the tuning stream)
FOCUS_STEPS = 200  # steps after a growth during which old weights train at OLD_RATE
OLD_RATE = 0.1
STRENGTH = 0.1  # the penalty on old weights: λ · Σ (θ − θ*)²
_GROWTH = "growth"  # state key: events, units added, last loss, focus steps left, pending


def widen(model: MLP, units: int, generator: torch.Generator | None = None) -> None:
    """Add `units` to every hidden layer. New units get nn.Linear's init on their inputs and
    zero weights out of them, so the network computes the same function until they train."""
    if isinstance(model, MultiHeadMLP):
        raise ValueError("per-tag heads and progressive columns do not widen")
    linears = [m for m in model.body if isinstance(m, nn.Linear)]
    readers: list[nn.Module] = [*linears[1:], model.head]
    with torch.no_grad():
        for layer, reader in zip(linears, readers, strict=True):
            w, b = layer.weight, layer.bias
            bound = 1.0 / math.sqrt(layer.in_features)
            new_w = (torch.rand(units, layer.in_features, generator=generator) * 2 - 1) * bound
            new_b = (torch.rand(units, generator=generator) * 2 - 1) * bound
            layer.weight = nn.Parameter(torch.cat([w, new_w.to(w)]), w.requires_grad)
            layer.bias = nn.Parameter(torch.cat([b, new_b.to(b)]), b.requires_grad)
            layer.out_features += units
            r = reader.weight
            reader.weight = nn.Parameter(torch.cat([r, r.new_zeros(r.shape[0], units)], dim=1),
                                         r.requires_grad)
            reader.in_features += units
    model.hidden = tuple(h + units for h in model.hidden)


class Expand(QuadraticPenalty):
    name = "expand"

    def __init__(self, units: int = UNITS, max_events: int = MAX_EVENTS,
                 high_loss: float = HIGH_LOSS, focus_steps: int = FOCUS_STEPS,
                 old_rate: float = OLD_RATE, strength: float = STRENGTH,
                 always: bool = False) -> None:
        if units < 1 or max_events < 0 or high_loss <= 0 or not 0 <= old_rate <= 1:
            raise ValueError("need units >= 1, max_events >= 0, high_loss > 0, 0 <= old_rate <= 1")
        super().__init__(strength)
        self.units, self.max_events, self.high_loss = units, max_events, high_loss
        self.focus_steps, self.old_rate = focus_steps, old_rate
        self.always = always  # the comparison: grow at every consolidation (still bounded)
        self.events = self.units_added = self.focus_left = 0
        self.last_loss = 0.0  # at the previous consolidation
        self.pending = False

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x), y)) if len(y) else 0.0
        # "Stays high": high at this consolidation and at the one before, i.e. the capacity
        # there is did not bring it down in between (a drift alone is one high consolidation).
        stays_high = min(loss, self.last_loss) > self.high_loss
        self.pending = (self.always or stays_high) and self.events < self.max_events
        self.last_loss = loss
        # Uniform importance: every weight there is now is an old weight to hold near θ*.
        params = trainable_parameters(model)
        self.importance = {k: torch.ones_like(p) for k, p in params.items()}
        self.anchor = detached_copy(params)

    def units_wanted(self) -> int:
        """Units to add to every hidden layer now (0: none); the learner widens the network."""
        if not self.pending:
            return 0
        self.pending = False
        self.events += 1
        self.units_added += self.units
        self.focus_left = self.focus_steps
        return self.units

    def apply_to_grads(self, model: nn.Module) -> None:
        super().apply_to_grads(model)
        if self.focus_left > 0 and self.importance:
            # Train mostly the new units: old entries (importance 1) at old_rate.
            names = [k for k in trainable_parameters(model) if k in self.importance]
            params = trainable_parameters(model)
            for k, g in zip(names, grads_of([params[k] for k in names]), strict=True):
                g.mul_(1 - (1 - self.old_rate) * self.importance[k])

    def after_step(self, model: nn.Module) -> None:
        self.focus_left = max(0, self.focus_left - 1)

    def growth_record(self) -> dict[str, int]:
        return {"events": self.events, "units_added_per_layer": self.units_added,
                "max_events": self.max_events}

    def _state(self) -> dict[str, Tensor]:
        stats = [self.events, self.units_added, self.last_loss, self.focus_left, self.pending]
        return {**super()._state(), _GROWTH: torch.tensor(stats, dtype=torch.float64)}

    def _load_state(self, d: dict[str, Tensor]) -> None:
        d = dict(d)
        stats = d.pop(_GROWTH, None)
        super()._load_state(d)
        if stats is not None:
            events, units, last, focus, pending = stats.tolist()
            self.events, self.units_added, self.focus_left = int(events), int(units), int(focus)
            self.last_loss, self.pending = float(last), bool(pending)
