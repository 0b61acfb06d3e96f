"""Learning without Forgetting (Li & Hoiem 2017), streamed: distil the last published version.

loss_term = α · T² · KL(softmax(teacher(x)/T) ‖ softmax(student(x)/T)) over the teacher's
classes, the teacher a frozen copy of the model as it was published. KL rather than the
soft cross-entropy: same gradient, but exactly 0 while the model still equals its teacher.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.strategies.base import StrategyBase, split_state

# Measured on digits, 2 seeds. New classes (0-4 then 5-9): any α in 0.1..1 kept 99% of the old
# classes (naive 84%). New domain (pixel-permuted digits, same classes): distilling a teacher
# that does not understand the new inputs fights learning them, to 94% at α = 0.1, 88% at 0.3,
# 43% at 1 (naive 96%). α = 0.1 serves both.
DEFAULT_ALPHA = 0.1
DEFAULT_TEMPERATURE = 2.0


_PER_TAG = ("tag_heads.", "columns.", "tag_offsets.")  # what the teacher's forward (default head) skips


def _frozen(model: nn.Module) -> nn.Module:
    return model.requires_grad_(False).eval()


def _rebuild(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A teacher with `model`'s architecture and `state`'s tensors; its head may have fewer rows
    than the live model's (classes added after it was published)."""
    teacher = copy.deepcopy(model)
    for name, t in state.items():
        owner, _, leaf = name.rpartition(".")
        module = teacher.get_submodule(owner)
        p = dict(module.named_parameters(recurse=False)).get(leaf)
        if p is not None and p.shape != t.shape:
            setattr(module, leaf, nn.Parameter(torch.empty_like(t, device=p.device)))
    missing, unexpected = teacher.load_state_dict(state, strict=False)
    # Per-tag heads and progressive columns made after the teacher was published: it answers
    # through the default head only, never through them.
    if unexpected or any(not k.startswith(_PER_TAG) for k in missing):
        raise RuntimeError(f"teacher state does not fit the model: missing {missing}, "
                           f"unexpected {unexpected}")
    return _frozen(teacher)


class LwF(StrategyBase):
    name = "lwf"

    def __init__(self, alpha: float = DEFAULT_ALPHA,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        if not (alpha >= 0 and temperature > 0):
            raise ValueError(f"need alpha >= 0 and temperature > 0, got {alpha}, {temperature}")
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature
        self.teacher: nn.Module | None = None
        self._loaded: dict[str, Tensor] | None = None  # a teacher state not yet rebuilt
        # The state a loaded teacher came from. A rebuilt teacher is a copy of the live model,
        # so it also holds the heads and columns made after its publish (see _rebuild); saving
        # its own state_dict would add them, and a restart would not save what it loaded.
        self._teacher_state: dict[str, Tensor] | None = None

    def _teacher_for(self, model: nn.Module) -> nn.Module | None:
        # A loaded state is rebuilt lazily: load_state_dict has no model to copy the
        # architecture from.
        if self._loaded is not None:
            self.teacher, self._loaded = _rebuild(model, self._loaded), None
        return self.teacher

    def on_publish(self, model: nn.Module) -> None:
        self.teacher, self._loaded = _frozen(copy.deepcopy(model)), None
        self._teacher_state = None

    def loss_term(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor | None:
        teacher = self._teacher_for(model)
        weight = self.alpha * self.scale
        if teacher is None or weight == 0:
            return None
        with torch.no_grad():
            target = teacher(x)
        k = target.shape[-1]
        if k == 0:
            return None
        t = self.temperature
        # float32 even under bf16 autocast (a no-op otherwise): CPU autocast would leave
        # log_softmax and its backward in bfloat16, rounding the log-probabilities (to ~0.4%)
        # before their difference, the whole of this term, is taken. Only the two networks'
        # matmuls run in bf16.
        student, target = logits[..., :k].float(), target.float()
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(target / t, dim=-1),
                      reduction="batchmean", log_target=True)
        return (weight * t * t) * kl  # T² keeps the gradient's scale independent of T (Hinton)

    def _state(self) -> dict[str, Tensor]:
        if self._teacher_state is not None:
            teacher = self._teacher_state
        elif self.teacher is not None:
            teacher = self.teacher.state_dict()
        else:
            teacher = {}
        return {f"teacher.{k}": v.detach() for k, v in teacher.items()}

    def _load_state(self, d: dict[str, Tensor]) -> None:
        (teacher,) = split_state(d, ("teacher",))
        self.teacher, self._loaded = None, teacher or None
        self._teacher_state = self._loaded
