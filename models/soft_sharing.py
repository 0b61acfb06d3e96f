"""Soft parameter sharing across tags (MNEMO_HEADS=soft; the survey's §2.3, multi-task learning).

Hard sharing (MNEMO_HEADS=per-tag) gives every tag its own head over one trunk. Here every tag
also has its own copy of the trunk's hidden layers (all of them, or the ones MLPConfig.soft_layers
names), and a penalty (models/strategies/soft_sharing.py) pulls every copy toward the mean of all
copies, the shared trunk counting as one of them.

A tag's copy is stored as the shared trunk plus the tag's offset, θ_k = θ_0 + δ_k (Evgeniou &
Pontil 2004, "Regularized multi-task learning"). Then a tag's samples train its offset and the
shared trunk both, so a strong penalty (every δ_k → 0) is exactly hard sharing and a weak one lets
a tag move away as far as its own data asks; a new tag's offset starts at zero, i.e. at the trunk
every tag trained so far. The mean of the copies is θ_0 + mean(δ_0 = 0, δ_1, …, δ_K), so the
penalty (λ/2) Σ_k ||θ_k − θ̄||² only involves offsets: its gradient on δ_k is λ(δ_k − δ̄).

Absent and unknown tags answer from the shared trunk and the default head, which learn from every
sample (replay included), as with per-tag heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.nets import GrowableHead, MLPConfig, MultiHeadMLP


class TrunkOffset(nn.Module):
    """One tag's offsets from the shared trunk, for the soft-shared hidden layers only."""

    def __init__(self, shapes: list[tuple[tuple[int, int], int]]) -> None:
        super().__init__()
        # Zero: a new tag starts at the shared trunk, what every tag so far has trained.
        self.weight = nn.ParameterList(nn.Parameter(torch.zeros(w)) for w, _ in shapes)
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(b)) for _, b in shapes)


class SoftSharedMLP(MultiHeadMLP):
    def __init__(self, config: MLPConfig) -> None:
        # Which hidden layers (0-based) have a copy per tag; set before the tags replay.
        self._layers = config.soft_layers or tuple(range(len(config.hidden)))
        super().__init__(config)

    def _init_tag_modules(self) -> None:
        self.tag_offsets = nn.ModuleDict()  # keys as tag_heads': "t0", "t1", ...

    @property
    def config(self) -> MLPConfig:
        base = super().config
        return MLPConfig(base.input_dim, base.hidden, base.num_classes, base.tag_heads,
                         soft_layers=self._layers)

    def _linears(self) -> list[nn.Linear]:
        return [m for m in self.body if isinstance(m, nn.Linear)]

    def _head_for(self, tag: str) -> GrowableHead:
        if tag not in self._classes:
            linears = self._linears()
            shapes = [(tuple(linears[i].weight.shape), linears[i].bias.shape[0])
                      for i in self._layers]
            self.tag_offsets[f"t{len(self.tag_offsets)}"] = TrunkOffset(shapes).to(  # type: ignore[arg-type]
                self.head.weight)
        return super()._head_for(tag)

    def tag_offset(self, tag: str) -> TrunkOffset:
        if tag not in self._classes:
            raise KeyError(tag)
        return self.tag_offsets[f"t{list(self._classes).index(tag)}"]  # type: ignore[return-value]

    def tag_features(self, x: Tensor, tag: str) -> Tensor:
        """The tag's copy of the trunk on x: θ_0 + δ_k where the layer is soft-shared."""
        offset = self.tag_offset(tag)
        h = self.standardizer(x)
        for i, layer in enumerate(self._linears()):
            if i in self._layers:
                j = self._layers.index(i)
                h = F.linear(h, layer.weight + offset.weight[j], layer.bias + offset.bias[j])
            else:  # a hard-shared layer: the trunk's own
                h = F.linear(h, layer.weight, layer.bias)
            h = F.relu(h)
        return h

    def forward_tag(self, x: Tensor, tag: str) -> Tensor:
        return self.tag_head(tag)(self.tag_features(x, tag))

    def tag_logits_from(self, h: Tensor, x: Tensor, tag: str) -> Tensor:
        return self.forward_tag(x, tag)  # the tag's own copy reads the inputs

    def offset_groups(self) -> list[list[nn.Parameter]]:
        """Per soft-shared tensor (a layer's weight or bias): every tag's trainable offset."""
        offsets = [o for o in self.tag_offsets.values() if isinstance(o, TrunkOffset)]
        groups = []
        for j in range(len(self._layers)):
            for kind in ("weight", "bias"):
                group = [getattr(o, kind)[j] for o in offsets]
                group = [p for p in group if p.requires_grad]
                if group:
                    groups.append(group)
        return groups


def sharing_penalty(model: nn.Module) -> Tensor | None:
    """(1/2) Σ over copies of ||θ_k − θ̄||², θ̄ the mean of every copy and the shared trunk;
    None for a model without per-tag copies."""
    if not isinstance(model, SoftSharedMLP):
        return None
    total = torch.zeros((), device=model.head.weight.device)
    for group in model.offset_groups():
        stacked = torch.stack([p.detach() for p in group])
        mean = stacked.sum(0) / (len(group) + 1)  # the shared trunk's offset is 0
        total = total + 0.5 * ((stacked - mean).square().sum() + mean.square().sum())
    return total


@torch.no_grad()
def pull_toward_mean(model: nn.Module, strength: float) -> None:
    """Add the penalty's gradient, strength · (δ_k − δ̄), into every offset's .grad."""
    if strength == 0 or not isinstance(model, SoftSharedMLP):
        return
    for group in model.offset_groups():
        mean = torch.stack([p.detach() for p in group]).sum(0) / (len(group) + 1)
        for p in group:
            pull = (p.detach() - mean).mul_(strength)
            if p.grad is None:
                p.grad = pull
            else:
                p.grad.add_(pull)
