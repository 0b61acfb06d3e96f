"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017): penalty c Σ Ω (θ − θ*)².

During a period ω accumulates the path integral −g·Δθ of every step (g: the gradient of the
unregularised loss, Δθ: that step's parameter change). At consolidation
Ω ← Ω + ω / (Δ² + ξ), with Δ the parameter change over the whole period, then ω ← 0 and θ* ← θ
(the one departure from the paper: ω is clipped at 0 there, see consolidate).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.strategies.base import (
    aligned,
    detached_copy,
    follow_anchor,
    follow_zeros,
    grads_of,
    split_state,
    trainable_parameters,
)
from models.strategies.quadratic import QuadraticPenalty

# Zenke et al. used c in [0.01, 1] (0.1 on permuted MNIST) and ξ = 1e-3. On digits then
# pixel-permuted digits (2 seeds) c = 0.1 kept 90% of the first domain (naive 85%) and learned
# the second to 93% (naive 96%); c = 1 learned it to 85%, c = 10 to 51%.
DEFAULT_C = 0.1
DEFAULT_XI = 1e-3


class SI(QuadraticPenalty):
    name = "si"
    importance_key = "big_omega"

    def __init__(self, c: float = DEFAULT_C, xi: float = DEFAULT_XI) -> None:
        if not xi > 0:
            raise ValueError(f"xi must be > 0, got {xi}")
        super().__init__(c)
        self.xi = xi
        self.omega: dict[str, Tensor] = {}  # ω of the current period; self.anchor is its start
        # Per-step scratch: the parameters and their unregularised gradient g.
        self._names: list[str] = []
        self._params: list[Tensor] = []
        self._grad: list[Tensor] = []
        self._stage = 0  # 1 after before_step, 2 after apply_to_grads in the same step

    @property
    def c(self) -> float:
        return self.strength

    def _start(self, model: nn.Module) -> None:
        # The first period starts at the parameters first seen; Ω stays empty (no penalty)
        # until the first consolidation.
        if not self.anchor:
            self.anchor = detached_copy(trainable_parameters(model))
            self.omega = {k: torch.zeros_like(a) for k, a in self.anchor.items()}

    def before_step(self, model: nn.Module) -> None:
        self._start(model)
        self._stage = 1

    def apply_to_grads(self, model: nn.Module) -> None:
        names, params = aligned(model, self.omega)
        grads = grads_of(params)
        if self._stage == 1:
            # p.grad is g, the gradient of the unregularised loss, and θ is still θ_before:
            # ω += g·θ_before here and ω −= g·θ_after in after_step make ω += −g·Δθ without
            # a copy of θ. Against the Δθ form: 6e-7 relative after 1,000 float32 steps, and
            # SI's step fell from 1.4x to 1.3x a naive one (models.bench_strategies, no replay).
            with torch.no_grad():
                torch._foreach_addcmul_([self.omega[k] for k in names], grads, params)
            self._names, self._params, self._grad, self._stage = names, params, grads, 2
        else:
            self._stage = 0
        # The penalty goes into new grad tensors, so g stays intact for after_step
        # (torch.optim optimizers read p.grad, never write it).
        penalised = self.add_penalty_grads(names, params, grads, in_place=False)
        if penalised is not grads:
            for p, g in zip(params, penalised, strict=True):
                p.grad = g

    def after_step(self, model: nn.Module) -> None:
        if self._stage != 2:
            raise RuntimeError("SI.after_step needs before_step and apply_to_grads in the same step")
        with torch.no_grad():
            torch._foreach_addcmul_([self.omega[k] for k in self._names], self._grad,
                                    self._params, value=-1.0)
        self._reset_step()

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        self._start(model)
        self.grow(model)
        names, params = aligned(model, self.omega)
        with torch.no_grad():
            for k, p in zip(names, params, strict=True):
                # Clipped at 0 (Zenke's ω can be negative where noisy steps, e.g. on replayed
                # samples, raised the loss): a negative Ω would make the penalty unbounded
                # below and push that parameter away from its anchor without limit.
                gain = self.omega[k].clamp(min=0) / ((p - self.anchor[k]).square() + self.xi)
                self.importance[k] = self.importance[k] + gain if k in self.importance else gain
                self.omega[k] = torch.zeros_like(p)
        self.anchor = detached_copy(trainable_parameters(model))

    def grow(self, model: nn.Module) -> None:
        # New rows and new parameters (a new tag's head) start their period now, from their
        # initial values, so their path integral is measured like every other's; without ω for
        # them the next consolidation anchored them but left them out of ω and Ω.
        self.anchor = follow_anchor(self.anchor, model)
        self.omega = follow_zeros(self.omega, model)
        self.importance = follow_zeros(self.importance, model)
        self._reset_step()

    def _reset_step(self) -> None:
        self._names, self._params, self._grad = [], [], []
        self._stage = 0

    def _state(self) -> dict[str, Tensor]:
        return {**super()._state(), **{f"omega.{k}": v for k, v in self.omega.items()}}

    def _load_state(self, d: dict[str, Tensor]) -> None:
        big, anchor, omega = split_state(d, (self.importance_key, "anchor", "omega"))
        if not set(omega) <= set(anchor) or not set(big) <= set(anchor):
            raise ValueError(f"malformed SI state, keys: {sorted(d)}")
        # States saved before grow() followed new parameters anchored a head made after the
        # first period but kept no ω or Ω for it: those entries start at 0, as grow() gives.
        omega = {k: omega.get(k, torch.zeros_like(a)) for k, a in anchor.items()}
        if big:
            big = {k: big.get(k, torch.zeros_like(a)) for k, a in anchor.items()}
        self.importance, self.anchor, self.omega = big, anchor, omega
        self._reset_step()
