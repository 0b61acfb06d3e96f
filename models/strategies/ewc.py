"""EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018): penalty λ/2 Σ F (θ − θ*)².

EWC keeps one Fisher and anchor per consolidation; online EWC keeps one of each, F ← γF + F_new.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from models.strategies.base import detached_copy, follow_zeros, trainable_parameters
from models.strategies.fisher import diagonal_fisher
from models.strategies.quadratic import QuadraticPenalty

# Measured with `python -m models.bench_digits`: λ=100 was best of 1..1e4 on digits; on a
# pixel-permuted second domain it kept 92% of the first against 86% without a penalty.
DEFAULT_LAM = 100.0
DEFAULT_GAMMA = 0.9
DEFAULT_MAX_TASKS = 10

Term = tuple[dict[str, Tensor], dict[str, Tensor]]  # (F, θ*)


class OnlineEWC(QuadraticPenalty):
    name = "online-ewc"
    coef = 0.5
    importance_key = "fisher"

    def __init__(self, lam: float = DEFAULT_LAM, gamma: float = DEFAULT_GAMMA,
                 chunk_size: int = 256) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"need 0 <= gamma <= 1, got {gamma}")
        super().__init__(lam)
        self.gamma = gamma
        self.chunk_size = chunk_size

    @property
    def lam(self) -> float:
        return self.strength

    @property
    def fisher(self) -> dict[str, Tensor]:
        return self.importance

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        if y.numel() == 0:
            return
        new = diagonal_fisher(model, trainable_parameters(model), x, y, self.chunk_size)
        self.absorb(model, new, self.gamma)


def merge(terms: list[Term]) -> tuple[dict[str, Tensor], dict[str, Tensor], float]:
    """Σₜ Fₜ(θ − aₜ)² = F(θ − ā)² + C with F = Σₜ Fₜ, ā = Σₜ Fₜaₜ / F, C = Σₜ Fₜ(aₜ − ā)².

    So any number of anchored penalties costs one quadratic per step, with the same gradient.
    """
    if len(terms) == 1:  # ā is then exactly θ*: the penalty is exactly 0 at the anchor
        return terms[0][0], terms[0][1], 0.0
    last = terms[-1][1]
    fisher, anchor, const = {}, {}, 0.0
    for k, a_last in last.items():
        # A task without k (a state saved before grow() covered parameters made after that
        # task) has Fₜ = 0 there: it adds nothing to any of the three sums.
        has = [(fk, ak) for fk, ak in terms if k in fk]
        f = torch.stack([fk[k] for fk, _ in has]).sum(0)
        # ā written as a shift from the newest anchor; where F = 0 every Fₜ is 0 and so is it.
        shift = torch.stack([fk[k] * (ak[k] - a_last) for fk, ak in has[:-1]]
                            or [torch.zeros_like(a_last)]).sum(0)
        fisher[k] = f
        anchor[k] = a_last + torch.where(f > 0, shift / f, 0.0)
        const += sum(float((fk[k] * (ak[k] - anchor[k]).square()).sum()) for fk, ak in has)
    return fisher, anchor, const


class EWC(QuadraticPenalty):
    """One (F, θ*) per consolidation, penalty Σₖ λ/2 Σ Fₖ(θ − θ*ₖ)². Past max_tasks the two
    oldest merge into one (same gradient; the reported penalty loses their constant C)."""

    name = "ewc"
    coef = 0.5
    importance_key = "fisher"

    def __init__(self, lam: float = DEFAULT_LAM, max_tasks: int = DEFAULT_MAX_TASKS,
                 chunk_size: int = 256) -> None:
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, got {max_tasks}")
        super().__init__(lam)
        self.max_tasks = max_tasks
        self.chunk_size = chunk_size
        self.tasks: list[Term] = []

    @property
    def lam(self) -> float:
        return self.strength

    def _refresh(self) -> None:
        # The hot path (penalty, apply_to_grads) sees the merged quadratic only.
        if self.tasks:
            self.importance, self.anchor, self.const = merge(self.tasks)
        else:
            self.importance, self.anchor, self.const = {}, {}, 0.0

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        if y.numel() == 0:
            return
        params = trainable_parameters(model)
        self._grow_tasks(model)
        self.tasks.append((diagonal_fisher(model, params, x, y, self.chunk_size),
                           detached_copy(params)))
        if len(self.tasks) > self.max_tasks:
            fisher, anchor, _ = merge(self.tasks[:2])
            self.tasks[:2] = [(fisher, anchor)]
        self._refresh()

    def _grow_tasks(self, model: nn.Module) -> None:
        # Every task covers every trainable parameter, those made after it with F = 0 (they
        # add nothing to its term), so merge() finds each key of the newest task in all.
        self.tasks = [(follow_zeros(f, model), follow_zeros(a, model)) for f, a in self.tasks]

    def grow(self, model: nn.Module) -> None:
        self._grow_tasks(model)
        self._refresh()

    def _state(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, (fisher, anchor) in enumerate(self.tasks):
            out.update({f"task{i}.fisher.{k}": v for k, v in fisher.items()})
            out.update({f"task{i}.anchor.{k}": v for k, v in anchor.items()})
        return out

    def _load_state(self, d: dict[str, Tensor]) -> None:
        if d and all(k.startswith(("fisher.", "anchor.")) for k in d):
            d = {f"task0.{k}": v for k, v in d.items()}  # saved when "ewc" kept a single F
        tasks: dict[int, Term] = {}
        for key, v in d.items():
            m = re.fullmatch(r"task(\d+)\.(fisher|anchor)\.(.+)", key)
            if m is None:
                raise ValueError(f"unexpected EWC state key {key!r}")
            task = tasks.setdefault(int(m[1]), ({}, {}))
            task[m[2] == "anchor"][m[3]] = v
        if sorted(tasks) != list(range(len(tasks))) or any(
                set(f) != set(a) for f, a in tasks.values()):
            raise ValueError(f"malformed EWC state, keys: {sorted(d)}")
        self.tasks = [tasks[i] for i in range(len(tasks))]
        self._refresh()
