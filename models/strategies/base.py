"""The strategy protocol the learner drives, and a base class with the hooks most strategies skip.

Per training step the learner calls, in this order:
    before_step(model)                      parameters about to change
    loss_term(model, x, logits)             an autograd term added to the cross-entropy
    backward
    apply_to_grads(model)                   p.grad holds the gradient of that loss on entry
    optimizer step
    after_step(model)                       parameters changed
and, outside the step: consolidate (every N samples and on drift), on_publish (a version went
live), grow (the network grew), relax (drift: weaken the regulariser), state_dict/load_state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from models.tensor_utils import grow_zeros

# The relax() multiplier travels with the state, so a restart keeps a relaxed penalty relaxed.
SCALE_KEY = "strength_scale"


@runtime_checkable
class Strategy(Protocol):
    name: str

    def penalty(self, model: nn.Module) -> Tensor:
        """The scalar parameter penalty at the model's current parameters (for reporting)."""
        ...

    def before_step(self, model: nn.Module) -> None: ...

    def loss_term(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor | None:
        """A term to add to the loss before backward (None: nothing to add)."""
        ...

    def apply_to_grads(self, model: nn.Module) -> None:
        """Add the penalty's gradient into each p.grad, without building an autograd graph."""
        ...

    def after_step(self, model: nn.Module) -> None: ...

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None: ...

    def on_publish(self, model: nn.Module) -> None:
        """The model as it is now was published (or activated) as the served version."""
        ...

    def relax(self, factor: float) -> None:
        """Multiply the regularisation strength by factor (kept in state_dict)."""
        ...

    def grow(self, model: nn.Module) -> None:
        """Follow the trainable parameters after any growth (new head rows, wider layers, a
        new tag's head or column, older columns frozen): old state kept, new entries neutral,
        state of parameters frozen since dropped. Called after every growth, before any step."""
        ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, d: dict[str, Tensor]) -> None: ...


HOOKS = frozenset(m for m in dir(Strategy) if not m.startswith("_")) - {"name"}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters a strategy regularises: trainable ones only, never the standardiser buffers."""
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_factor(factor: float) -> float:
    if not (math.isfinite(factor) and factor >= 0):
        raise ValueError(f"relax factor must be finite and >= 0, got {factor}")
    return float(factor)


class StrategyBase:
    """No-op hooks plus the relax() scale. Subclasses override only the hooks they need and
    provide _state/_load_state; a method that looks like a hook but is not one (a typo such as
    `after_stp`) is refused when the class is defined, instead of silently never running."""

    name: str

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        strays = [m for m in vars(cls) if m.startswith(("before_", "after_", "on_"))
                  and m not in HOOKS]
        if strays:
            raise TypeError(f"{cls.__name__} defines {strays}, which are not Strategy hooks")

    def __init__(self) -> None:
        self.scale = 1.0

    def penalty(self, model: nn.Module) -> Tensor:
        return torch.zeros((), device=model_device(model))

    def before_step(self, model: nn.Module) -> None:
        return None

    def loss_term(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor | None:
        return None

    def apply_to_grads(self, model: nn.Module) -> None:
        return None

    def after_step(self, model: nn.Module) -> None:
        return None

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        return None

    def on_publish(self, model: nn.Module) -> None:
        return None

    def grow(self, model: nn.Module) -> None:
        return None

    def relax(self, factor: float) -> None:
        self.scale *= check_factor(factor)

    def _state(self) -> dict[str, Tensor]:
        return {}

    def _load_state(self, d: dict[str, Tensor]) -> None:
        if d:
            raise ValueError(f"{self.name} strategy has no such state: {sorted(d)}")

    def state_dict(self) -> dict[str, Tensor]:
        # float64: repeated relax factors multiply without float32 rounding.
        return {**self._state(), SCALE_KEY: torch.tensor(self.scale, dtype=torch.float64)}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        d = dict(d)
        scale = d.pop(SCALE_KEY, None)  # absent in states saved before relax() existed
        self._load_state(d)
        self.scale = 1.0 if scale is None else check_factor(float(scale))


def grow_like(t: Tensor, p: Tensor) -> Tensor:
    """`t` extended to p's shape, the new entries taken from p (a fresh anchor for new rows)."""
    if grow_zeros(t, p.shape) is t:  # also refuses a shrink or a change of rank
        return t
    out = p.detach().clone()
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def follow(part: dict[str, Tensor], model: nn.Module,
           fresh: Callable[[nn.Parameter], Tensor],
           grown: Callable[[Tensor, nn.Parameter], Tensor]) -> dict[str, Tensor]:
    """Per-parameter state `part` made to cover the model's trainable parameters as they are
    now, in model order: an entry whose parameter grew (new head rows, wider layers) becomes
    grown(entry, p), a parameter made since (a new tag's head, a column) gets fresh(p), and the
    entry of a parameter frozen since (an older progressive column) is dropped: it cannot move,
    and `aligned` refuses state for it. Empty stays empty: nothing was measured yet, and new
    parameters join at the next consolidation like every other one."""
    if not part:
        return part
    named = dict(model.named_parameters())
    unknown = [k for k in part if k not in named]
    if unknown:
        raise ValueError(f"model lacks parameters the strategy state covers: {unknown}")
    return {k: grown(part[k], p) if k in part else fresh(p)
            for k, p in named.items() if p.requires_grad}


def follow_zeros(part: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """follow() with new entries 0: for an importance or an accumulator (no penalty from them),
    and for an anchor paired with such an importance (any anchor is neutral under Ω = 0)."""
    return follow(part, model, torch.zeros_like, lambda t, p: grow_zeros(t, p.shape))


def follow_anchor(part: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """follow() with new entries taken from the parameters: the start of a period whose path
    is measured from there on (SI's θ* of the current period)."""
    return follow(part, model, lambda p: p.detach().clone(), grow_like)


def aligned(model: nn.Module, keys: dict[str, Tensor]) -> tuple[list[str], list[Tensor]]:
    """Names and parameters covered by `keys`, in model order (not dict order: a loaded state
    comes back sorted by name), so float sums are reproducible across a save/restore."""
    params = trainable_parameters(model)
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"model lacks parameters the strategy state covers: {missing}")
    names = [k for k in params if k in keys]
    return names, [params[k] for k in names]


def grads_of(params: list[Tensor]) -> list[Tensor]:
    """Each parameter's .grad, zeros where backward left none."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in params]


def split_state(d: dict[str, Tensor], prefixes: tuple[str, ...]) -> list[dict[str, Tensor]]:
    """Split `{prefix}.{param}` keys by prefix; refuses any other key."""
    parts: list[dict[str, Tensor]] = [{} for _ in prefixes]
    for key, v in d.items():
        head, _, rest = key.partition(".")
        if head not in prefixes or not rest:
            raise ValueError(f"unexpected strategy state key {key!r} (expected {prefixes})")
        parts[prefixes.index(head)][rest] = v
    return parts


def detached_copy(params: dict[str, nn.Parameter] | dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: p.detach().clone() for k, p in params.items()}
