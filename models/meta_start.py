"""Meta-learned starts for new tags (MNEMO_META_START=reptile; Nichol et al. 2018, "On
First-Order Meta-Learning Algorithms").

With per-tag heads (a head per tag over the shared trunk) or progressive columns (a column per
tag), a new tag's head or column normally starts from a random initialisation and spends its
first labels finding what the older tags already found. Reptile keeps a meta-initialisation
that a few steps adapt well to any tag seen so far: repeatedly take a tag's buffered samples (an
episode), adapt a copy of the meta-initialisation to them for k steps, and move the
meta-initialisation part of the way toward the adapted copy. A new tag's head rows (and a new
column's hidden layers) are then copied from it.

Head rows are kept per global class, so a tag over a subset of the labels takes the rows of its
own classes. A class never seen in an episode has no meta row: its row starts as usual. The
first episode of a class starts its meta row from that tag's trained row (a warm start; Reptile
only refines from there), the first column episode from the tag's own column where the shapes
match. Laterals and input statistics are not meta-learned: a new column's laterals start at
zero and its standardiser learns its own tag's inputs, as without a meta-start.

Cost: `episodes x inner_steps` small steps per update (a head, or one column alone, on
`episode_size` rows); the stream step updates when a new tag arrives and at each consolidation.
State: the meta rows, their `known` mask and (progressive) one column's hidden layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.nets import MultiHeadMLP

META_STARTS = ("none", "reptile")
_HEAD_W, _HEAD_B, _KNOWN, _UPDATES, _COLUMN = "head_w", "head_b", "known", "updates", "column."
_STEP_W, _STEP_B, _STEP_COLUMN = "step_w", "step_b", "step_column."  # log step sizes
MIN_EPISODE = 8  # a tag with fewer buffered samples gives no episode: too few to adapt on


@dataclass(frozen=True)
class ReptileParams:
    """Measured on the meta-start benchmark (service/bench/meta.py)."""

    episodes: int = 8  # tag episodes per update
    # The adaptation the meta-initialisation is learned for: what the learner itself does on a
    # new tag's first three batches (two Adam steps each at MNEMO_LEARNING_RATE's default).
    # At 1e-2 and 10 steps the meta rows' norm grew with every update (0.6 -> 7 over 5 tags)
    # and new heads started no better than plain ones.
    inner_steps: int = 6
    inner_lr: float = 2e-3
    meta_lr: float = 0.5  # how far the meta-initialisation moves toward each adapted copy
    episode_size: int = 32  # rows per adaptation step (drawn from the tag's buffered samples)
    # Meta-learned per-parameter step sizes (Meta-SGD's alpha, learned first-order): each meta
    # parameter also has a log step size, adapted in every episode's inner loop by hypergradient
    # descent (Baydin et al. 2018) and moved by the same Reptile step; a new tag's started rows
    # (and column) then take their first `inner_steps` learner updates scaled by it. Bounded to
    # [1/max_step, max_step]. Off by default: see BENCHMARKS.md "Meta-learned starts".
    step_sizes: bool = False
    hyper_lr: float = 0.02  # log-step-size change per inner step (hypergradient, RMS-normalised)
    max_step: float = 3.0


class MetaStart:
    """The meta-initialisation of a new tag's head (per class) and, for progressive columns,
    of a new column's hidden layers; `update` learns it, `start` applies it."""

    name = "reptile"

    def __init__(self, params: ReptileParams | None = None, seed: int = 0) -> None:
        self.params = params or ReptileParams()
        self.seed = seed
        self.head_w: Tensor | None = None  # (classes, head inputs)
        self.head_b: Tensor | None = None
        self.known: Tensor | None = None  # bool per class: has a meta row
        self.column: list[Tensor] = []  # progressive: weight, bias of each hidden layer
        self.updates = 0
        # step_sizes: log step size of each meta parameter (rows as head_w/head_b; column's)
        self.step_w: Tensor | None = None
        self.step_b: Tensor | None = None
        self.step_column: list[Tensor] = []
        self._boost: dict[str, int] = {}  # new tag -> learner steps its step sizes still scale
        self._hooks: list[Any] = []
        self._hooked: torch.optim.Optimizer | None = None
        self._saved: list[tuple[Tensor, Tensor, Tensor]] = []

    # ---- applying it -----------------------------------------------------------------------
    @staticmethod
    def snapshot_classes(model: MultiHeadMLP) -> dict[str, int]:
        """How many rows each tag's head has: what `start` compares against."""
        return {t: len(model.tag_classes(t) or ()) for t in model.tags}

    @torch.no_grad()
    def start(self, model: MultiHeadMLP, before: dict[str, int]) -> list[str]:
        """Copy the meta-initialisation into what appeared since `before` (snapshot_classes):
        a new tag's head rows and (progressive) its new column's hidden layers, and rows a tag
        gained for classes with a meta row. Call before the optimizer or strategy sees them.
        Returns the tags whose new tensors it set."""
        started = []
        for index, tag in enumerate(model.tags):
            classes = model.tag_classes(tag) or []
            old = before.get(tag)
            touched = False
            if old is None and model.PROGRESSIVE and self.column and index > 0:
                touched = self._start_column(model.columns[index])  # type: ignore[attr-defined]
            if self.head_w is not None and (old is None or old < len(classes)) \
                    and model.trainable_tag(tag):
                head = model.tag_head(tag)
                for row in range(old or 0, len(classes)):
                    c = classes[row]
                    if c < len(self.known) and self.known[c] \
                            and head.weight.shape[1] == self.head_w.shape[1]:
                        head.weight[row] = self.head_w[c].to(head.weight)
                        head.bias[row] = self.head_b[c].to(head.bias)  # type: ignore[index]
                        touched = True
            if touched:
                started.append(tag)
        return started

    def boost(self, optimizer: torch.optim.Optimizer, model: MultiHeadMLP,
              tags: list[str]) -> None:
        """step_sizes: the next `inner_steps` updates of `optimizer` move each started tag's
        meta rows (and column) by exp(log step) times what the optimizer alone would (the
        adaptation the step sizes were learned for). Optimizer step hooks, removed once no tag
        is left; a restart in between drops the rest of them (not state)."""
        if not self.params.step_sizes or self.step_w is None or not tags:
            return
        for tag in tags:
            self._boost[tag] = self.params.inner_steps
        if self._hooked is not optimizer:  # a new learner: the old one's hooks go
            self._unhook()
            self._hooked = optimizer
            self._hooks = [optimizer.register_step_pre_hook(lambda *_: self._before(model)),
                           optimizer.register_step_post_hook(lambda *_: self._after())]

    def _unhook(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._hooked, self._saved = [], None, []

    @torch.no_grad()
    def _before(self, model: MultiHeadMLP) -> None:
        """Each boosted tag's tensors before the step, with their step-size multipliers."""
        self._saved = []
        for tag in list(self._boost):
            if tag not in model.tags:
                del self._boost[tag]
                continue
            classes = model.tag_classes(tag) or []
            head = model.tag_head(tag)
            if self.step_w is not None and head.weight.shape[1] == self.step_w.shape[1]:
                mw, mb = torch.ones_like(head.weight), torch.ones_like(head.bias)  # type: ignore[arg-type]
                for row, c in enumerate(classes):
                    if c < len(self.step_w) and c < len(self.known) and self.known[c]:  # type: ignore[arg-type,index]
                        mw[row] = self.step_w[c].exp().to(mw)
                        mb[row] = self.step_b[c].exp().to(mb)  # type: ignore[index]
                self._saved += [(head.weight, head.weight.detach().clone(), mw),
                                (head.bias, head.bias.detach().clone(), mb)]  # type: ignore[arg-type, union-attr]
            if model.PROGRESSIVE and self.step_column:
                layers = list(model.columns[model.tags.index(tag)].layers)  # type: ignore[attr-defined]
                params = [t for layer in layers for t in (layer.weight, layer.bias)]
                if [t.shape for t in params] == [t.shape for t in self.step_column]:
                    self._saved += [(p, p.detach().clone(), s.exp().to(p))
                                    for p, s in zip(params, self.step_column, strict=True)]

    @torch.no_grad()
    def _after(self) -> None:
        for p, before, scale in self._saved:
            p.copy_(before + scale * (p - before))
        self._saved = []
        for tag in list(self._boost):
            self._boost[tag] -= 1
            if self._boost[tag] <= 0:
                del self._boost[tag]
        if not self._boost:
            self._unhook()

    def _start_column(self, column: torch.nn.Module) -> bool:
        layers = list(column.layers)  # type: ignore[attr-defined]
        shapes = [t.shape for layer in layers for t in (layer.weight, layer.bias)]
        if shapes != [t.shape for t in self.column]:
            return False  # another MNEMO_COLUMN_HIDDEN than the one it learned
        for layer, (w, b) in zip(layers, zip(self.column[::2], self.column[1::2], strict=True),
                                 strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        return True

    # ---- learning it -----------------------------------------------------------------------
    def update(self, model: MultiHeadMLP, x: Tensor, y: Tensor, tags: list[str]) -> int:
        """Reptile over episodes of buffered samples (x, y: global classes; their tags) of tags
        that have a head; returns the episodes run (0: no tag has enough samples yet)."""
        if len(tags) != len(y) or not len(y):
            return 0
        rows: dict[str, list[int]] = {}
        for i, tag in enumerate(tags):
            if tag and model.tag_classes(tag):
                rows.setdefault(tag, []).append(i)
        eligible = sorted(t for t, r in rows.items() if len(r) >= MIN_EPISODE)
        if not eligible:
            return 0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.updates)
        device = model.head.weight.device
        self._to(device)  # a restored state comes back on the CPU
        for _ in range(self.params.episodes):
            tag = eligible[int(torch.randint(len(eligible), (1,), generator=gen))]
            idx = torch.tensor(rows[tag])
            self._episode(model, tag, x[idx].to(device), y[idx].to(device), gen)
        self.updates += 1
        return self.params.episodes

    def _episode(self, model: MultiHeadMLP, tag: str, x: Tensor, y: Tensor,
                 gen: torch.Generator) -> None:
        index = model.tags.index(tag)
        progressive = model.PROGRESSIVE
        with torch.no_grad():
            if progressive:  # the column alone, on the tag's own input statistics
                inputs = model.columns[index].standardizer(x)  # type: ignore[attr-defined]
                if not self.column:
                    self._init_column(model, index, gen)
            else:  # the shared trunk is fixed within an episode: features once
                inputs = model.features(x)
            head = model.tag_head(tag)
            width = self.column[-1].shape[0] if progressive else head.in_features
            self._ensure_rows(model.num_classes, width, x.device)
            classes = sorted(set(y.tolist()))
            fresh = [c for c in classes if not self.known[c]]  # type: ignore[index]
            if fresh:
                self._warm_rows(fresh, model, tag, head, progressive, index, gen)
        cls = torch.tensor(classes, device=x.device)
        local = torch.searchsorted(cls, y)  # the episode's classes, in order
        start = [t.clone() for t in self.column] + [self.head_w[cls], self.head_b[cls]]  # type: ignore[index]
        fast = [t.clone().requires_grad_(True) for t in start]
        opt = torch.optim.Adam(fast, lr=self.params.inner_lr)
        steps = None
        if self.params.step_sizes:
            self._ensure_steps()
            steps = [t.clone() for t in self.step_column] + [self.step_w[cls], self.step_b[cls]]  # type: ignore[index]
        with torch.enable_grad():  # callers may be inside no_grad (e.g. an evaluation)
            self._adapt(fast, opt, inputs, local, gen, steps)
        eps = self.params.meta_lr
        with torch.no_grad():
            for meta, adapted in zip(self.column, fast, strict=False):
                meta.add_(adapted.detach() - meta, alpha=eps)
            self.head_w[cls] += eps * (fast[-2].detach() - self.head_w[cls])  # type: ignore[index]
            self.head_b[cls] += eps * (fast[-1].detach() - self.head_b[cls])  # type: ignore[index]
            if steps is not None:
                for meta, adapted in zip(self.step_column, steps, strict=False):
                    meta.add_(adapted - meta, alpha=eps)
                self.step_w[cls] += eps * (steps[-2] - self.step_w[cls])  # type: ignore[index]
                self.step_b[cls] += eps * (steps[-1] - self.step_b[cls])  # type: ignore[index]

    def _adapt(self, fast: list[Tensor], opt: torch.optim.Optimizer, inputs: Tensor,
               local: Tensor, gen: torch.Generator, steps: list[Tensor] | None = None) -> None:
        """k steps of the column (if any) and head rows `fast` on the episode's samples. With
        `steps` (log step sizes, one per tensor of `fast`): each Adam update is scaled by
        exp(step), and step learns by hypergradient descent: dL(θ_t)/d log α = g_t · Δ_{t-1},
        Δ the update last applied (normalised by its RMS per tensor, clamped to the bound)."""
        bound = math.log(self.params.max_step)
        applied: list[Tensor] = []
        for _ in range(self.params.inner_steps):
            pick = torch.randint(len(local), (self.params.episode_size,), generator=gen)
            a = inputs[pick.to(inputs.device)]
            for w, b in zip(fast[:-2:2], fast[1:-2:2], strict=True):
                a = F.linear(a, w, b).relu()
            loss = F.cross_entropy(F.linear(a, fast[-2], fast[-1]), local[pick.to(local.device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if steps is None:
                opt.step()
                continue
            with torch.no_grad():
                for s, p, d in zip(steps, fast, applied, strict=False):
                    h = p.grad * d  # type: ignore[operator]
                    s.sub_(self.params.hyper_lr * h / (h.pow(2).mean().sqrt() + 1e-30))
                    s.clamp_(-bound, bound)
                before = [p.detach().clone() for p in fast]
            opt.step()
            with torch.no_grad():
                applied = [(p - b) * s.exp() for p, b, s in zip(fast, before, steps, strict=True)]
                for p, b, d in zip(fast, before, applied, strict=True):
                    p.copy_(b + d)

    def _ensure_steps(self) -> None:
        """Log step sizes (0: the learner's own step) for every meta row and column tensor."""
        assert self.head_w is not None
        if self.step_w is None or self.step_w.shape[1] != self.head_w.shape[1] \
                or self.step_w.shape[0] > self.head_w.shape[0]:
            self.step_w, self.step_b = torch.zeros_like(self.head_w), torch.zeros_like(self.head_b)  # type: ignore[arg-type]
        k = self.head_w.shape[0] - self.step_w.shape[0]
        if k > 0:
            self.step_w = torch.cat([self.step_w, self.step_w.new_zeros(k, self.step_w.shape[1])])
            self.step_b = torch.cat([self.step_b, self.step_b.new_zeros(k)])  # type: ignore[list-item]
        if [t.shape for t in self.step_column] != [t.shape for t in self.column]:
            self.step_column = [torch.zeros_like(t) for t in self.column]

    def _ensure_rows(self, classes: int, width: int, device: torch.device) -> None:
        """Meta rows for every class the model has, at the head's input width (rows of a
        different width, e.g. after MNEMO_COLUMN_HIDDEN changed, start over)."""
        if self.head_w is not None and self.head_w.shape[1] != width:
            self.head_w = self.head_b = self.known = None
        if self.head_w is None:
            self.head_w = torch.zeros(0, width, device=device)
            self.head_b = torch.zeros(0, device=device)
            self.known = torch.zeros(0, dtype=torch.bool, device=device)
        k = classes - self.head_w.shape[0]
        if k > 0:
            self.head_w = torch.cat([self.head_w, self.head_w.new_zeros(k, width)])
            self.head_b = torch.cat([self.head_b, self.head_b.new_zeros(k)])  # type: ignore[list-item]
            self.known = torch.cat([self.known, self.known.new_zeros(k)])  # type: ignore[list-item]

    def _warm_rows(self, fresh: list[int], model: MultiHeadMLP, tag: str,
                   head: torch.nn.Module, progressive: bool, index: int,
                   gen: torch.Generator) -> None:
        """A class's first meta row: the tag's trained row where it reads the same features
        (per-tag heads; the column the meta column started from), else a fresh row."""
        assert self.head_w is not None and self.head_b is not None and self.known is not None
        mine = model.tag_classes(tag) or []
        same = not progressive or index == self._column_source
        width = self.head_w.shape[1]
        bound = 1.0 / math.sqrt(width)
        for c in fresh:
            if same and c in mine and head.weight.shape[1] == width:  # type: ignore[union-attr]
                self.head_w[c] = head.weight[mine.index(c)]  # type: ignore[index]
                self.head_b[c] = head.bias[mine.index(c)]  # type: ignore[index]
            else:
                self.head_w[c] = ((torch.rand(width, generator=gen) * 2 - 1) * bound).to(self.head_w)
                self.head_b[c] = 0.0
            self.known[c] = True

    _column_source = -1  # which tag's column the meta column started from (not state)

    def _init_column(self, model: MultiHeadMLP, index: int, gen: torch.Generator) -> None:
        """The meta column's start: the episode tag's trained column if it has a new column's
        sizes, else nn.Linear's init."""
        hidden = model.column_hidden or model.hidden
        widths = (model.input_dim, *hidden)
        source = list(model.columns[index].layers)  # type: ignore[attr-defined]
        if tuple(layer.out_features for layer in source) == tuple(hidden):
            self.column = [t.detach().clone() for layer in source for t in (layer.weight, layer.bias)]
            self._column_source = index
            return
        self.column = []
        for a, b in zip(widths, hidden, strict=False):
            bound = 1.0 / math.sqrt(a)
            self.column += [((torch.rand(b, a, generator=gen) * 2 - 1) * bound),
                            ((torch.rand(b, generator=gen) * 2 - 1) * bound)]
        self.column = [t.to(model.head.weight) for t in self.column]

    def _to(self, device: torch.device) -> None:
        if self.head_w is not None and self.head_w.device != device:
            self.head_w, self.head_b, self.known = (
                t.to(device) for t in (self.head_w, self.head_b, self.known))  # type: ignore[union-attr]
        self.column = [t.to(device) for t in self.column]
        if self.step_w is not None:
            self.step_w, self.step_b = self.step_w.to(device), self.step_b.to(device)  # type: ignore[union-attr]
        self.step_column = [t.to(device) for t in self.step_column]

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        out = {_UPDATES: torch.tensor(self.updates)}
        if self.head_w is not None:
            out.update({_HEAD_W: self.head_w, _HEAD_B: self.head_b, _KNOWN: self.known})  # type: ignore[dict-item]
        out.update({f"{_COLUMN}{i}": t for i, t in enumerate(self.column)})
        if self.step_w is not None:
            out.update({_STEP_W: self.step_w, _STEP_B: self.step_b})  # type: ignore[dict-item]
        out.update({f"{_STEP_COLUMN}{i}": t for i, t in enumerate(self.step_column)})
        return {k: v.detach().cpu().clone() for k, v in out.items()}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        unknown = [k for k in d if k not in (_HEAD_W, _HEAD_B, _KNOWN, _UPDATES, _STEP_W, _STEP_B)
                   and not k.startswith((_COLUMN, _STEP_COLUMN))]
        if unknown:
            raise ValueError(f"not a meta-start state: {sorted(unknown)}")
        self.updates = int(d.get(_UPDATES, torch.tensor(0)))
        head = d.get(_HEAD_W)
        self.head_w = None if head is None else head.clone()
        self.head_b = None if head is None else d[_HEAD_B].clone()
        self.known = None if head is None else d[_KNOWN].clone().bool()
        n = len([k for k in d if k.startswith(_COLUMN)])
        self.column = [d[f"{_COLUMN}{i}"].clone() for i in range(n)]
        step = d.get(_STEP_W)
        self.step_w = None if step is None else step.clone()
        self.step_b = None if step is None else d[_STEP_B].clone()
        n = len([k for k in d if k.startswith(_STEP_COLUMN)])
        self.step_column = [d[f"{_STEP_COLUMN}{i}"].clone() for i in range(n)]


def make_meta_start(name: str, seed: int = 0, step_sizes: bool = False) -> MetaStart | None:
    """MNEMO_META_START: None for `none`; `step_sizes` adds the meta-learned step sizes."""
    if name == "none":
        return None
    if name != "reptile":
        raise ValueError(f"unknown meta start {name!r}; known: {', '.join(META_STARTS)}")
    return MetaStart(ReptileParams(step_sizes=step_sizes), seed=seed)
