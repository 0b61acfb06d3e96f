"""What EWC, online EWC, SI and MAS share: penalty w·(Σᵢ Ωᵢ (θᵢ − θ*ᵢ)² + C), its gradient
2w·Ω(θ − θ*) added straight to p.grad with _foreach ops (no autograd graph), growth and state."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.strategies.base import (
    StrategyBase,
    aligned,
    detached_copy,
    follow_zeros,
    grads_of,
    model_device,
    split_state,
    trainable_parameters,
)


class QuadraticPenalty(StrategyBase):
    # w = coef · strength · relax scale: EWC writes λ/2 (coef 0.5), SI and MAS write c and λ.
    coef = 1.0
    importance_key = "importance"  # the name Ω goes by in the state (fisher, big_omega, ...)

    def __init__(self, strength: float) -> None:
        super().__init__()
        if not strength >= 0:
            raise ValueError(f"regularisation strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.const = 0.0  # Σ of constants when several quadratics were merged into one (EWC)
        # apply_to_grads' (model, importance dict, its keys) and the aligned parameters: a walk
        # over named_parameters every step cost ~6% of a learn_many. Parameters are replaced
        # only with grow() (new dicts) or freezing (a new state): both miss this key.
        self._aligned_key: tuple[object, ...] = ()
        self._aligned: tuple[list[str], list[Tensor]] = ([], [])

    @property
    def weight(self) -> float:
        return self.coef * self.strength * self.scale

    def penalty(self, model: nn.Module) -> Tensor:
        if not self.importance:
            return torch.zeros((), device=model_device(model))
        names, params = aligned(model, self.importance)
        with torch.no_grad():
            diffs = torch._foreach_sub(params, [self.anchor[k] for k in names])
            torch._foreach_mul_(diffs, diffs)
            torch._foreach_mul_(diffs, [self.importance[k] for k in names])
            return self.weight * (torch.stack([d.sum() for d in diffs]).sum() + self.const)

    def apply_to_grads(self, model: nn.Module) -> None:
        if self.importance and self.weight != 0:
            names, params = self._aligned_params(model)
            self.add_penalty_grads(names, params, grads_of(params))

    def _aligned_params(self, model: nn.Module) -> tuple[list[str], list[Tensor]]:
        """aligned(model, self.importance), remembered while the model, the importance dict
        and its keys stay the same and every parameter is still trainable."""
        key = self._aligned_key
        if (key and key[0] is model and key[1] is self.importance
                and key[2] == tuple(self.importance)
                and all(p.requires_grad for p in self._aligned[1])):
            return self._aligned
        self._aligned = aligned(model, self.importance)
        self._aligned_key = (model, self.importance, tuple(self.importance))
        return self._aligned

    def add_penalty_grads(self, names: list[str], params: list[Tensor], grads: list[Tensor],
                          *, in_place: bool = True) -> list[Tensor]:
        """grads + 2w·Ω(θ − θ*), two _foreach kernels and no autograd graph: into grads
        (returned), or with in_place=False into new tensors (grads itself if no penalty)."""
        if not self.importance or self.weight == 0:
            return grads
        with torch.no_grad():
            diffs = torch._foreach_sub(params, [self.anchor[k] for k in names])
            importance = [self.importance[k] for k in names]
            if not in_place:
                return torch._foreach_addcmul(grads, diffs, importance, value=2 * self.weight)
            torch._foreach_addcmul_(grads, diffs, importance, value=2 * self.weight)
            return grads

    def absorb(self, model: nn.Module, new: dict[str, Tensor], decay: float) -> None:
        """Ω ← decay·Ω + Ω_new and θ* ← θ: the consolidation step of online EWC and MAS.
        `new` covers the trainable parameters, and so does Ω once grown: one key set."""
        if self.importance:
            self.grow(model)
            new = {k: decay * self.importance[k] + f for k, f in new.items()}
        self.importance = new
        self.anchor = detached_copy(trainable_parameters(model))

    def grow(self, model: nn.Module) -> None:
        # Every trainable parameter, not only those of the last consolidation: a head made
        # since (a new tag) gets Ω = 0 (and θ* = 0, neutral under Ω = 0), so the next absorb
        # has an Ω to decay for each key it measures.
        self.importance = follow_zeros(self.importance, model)
        self.anchor = follow_zeros(self.anchor, model)

    def _state(self) -> dict[str, Tensor]:
        out = {f"{self.importance_key}.{k}": v for k, v in self.importance.items()}
        out.update({f"anchor.{k}": v for k, v in self.anchor.items()})
        return out

    def _load_state(self, d: dict[str, Tensor]) -> None:
        importance, anchor = split_state(d, (self.importance_key, "anchor"))
        if set(importance) != set(anchor):
            raise ValueError(f"malformed {self.name} state, keys: {sorted(d)}")
        self.importance, self.anchor = importance, anchor
