"""Networks: a config dataclass, an online input standardiser and an MLP whose head can grow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TagHeads = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class MLPConfig:
    input_dim: int
    hidden: tuple[int, ...] = (128, 128)
    num_classes: int = 0
    # None: one shared head. Otherwise per-tag heads (MNEMO_HEADS=per-tag): each tag, in the
    # order its head was made, with the (global) class of each of its head's rows.
    tag_heads: TagHeads | None = None
    # MNEMO_STRATEGY=progressive: each tag head is a whole column (models/progressive.py).
    progressive: bool = False
    # Progressive columns after the first (MNEMO_COLUMN_HIDDEN): their hidden sizes, as deep
    # as `hidden`; None: as wide as the first. Narrower ones lean on the laterals and cost less.
    column_hidden: tuple[int, ...] | None = None
    # MNEMO_HEADS=soft (models/soft_sharing.py): hidden layers (0-based) copied per tag.
    soft_layers: tuple[int, ...] | None = None
    # The input columns the standardiser scales (records: the numeric values); the others
    # (one-hot and indicator columns) pass as they are. None: every column (vectors).
    scaled_columns: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) so equal configs compare and hash equal.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.tag_heads is not None:
            heads = tuple((str(t), tuple(int(c) for c in cs)) for t, cs in self.tag_heads)
            object.__setattr__(self, "tag_heads", heads)
            bad = [t for t, cs in heads if any(not 0 <= c < self.num_classes for c in cs)
                   or len(set(cs)) != len(cs)]
            if bad or len({t for t, _ in heads}) != len(heads):
                raise ValueError(f"invalid tag heads {bad or 'duplicate tags'} for "
                                 f"{self.num_classes} classes")
        if self.progressive and self.tag_heads is None:
            raise ValueError("progressive columns need tag_heads (possibly empty)")
        if self.column_hidden is not None:
            object.__setattr__(self, "column_hidden", tuple(int(h) for h in self.column_hidden))
            if (not self.progressive or len(self.column_hidden) != len(self.hidden)
                    or any(h < 1 for h in self.column_hidden)):
                raise ValueError(f"column_hidden {self.column_hidden} needs progressive columns "
                                 f"and one positive size per hidden layer ({len(self.hidden)})")
        if self.soft_layers is not None:
            layers = tuple(int(i) for i in self.soft_layers)
            object.__setattr__(self, "soft_layers", layers)
            if (self.tag_heads is None or self.progressive or not layers or sorted(set(layers))
                    != list(layers) or not all(0 <= i < len(self.hidden) for i in layers)):
                raise ValueError(f"soft_layers {layers} need tag_heads, no progressive columns "
                                 f"and increasing hidden layer indices below {len(self.hidden)}")
        if self.input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {self.input_dim}")
        if self.scaled_columns is not None:
            scaled = tuple(int(c) for c in self.scaled_columns)
            object.__setattr__(self, "scaled_columns", scaled)
            if sorted(set(scaled)) != list(scaled) or not all(0 <= c < self.input_dim
                                                              for c in scaled):
                raise ValueError(f"scaled_columns must be increasing column indices below "
                                 f"{self.input_dim}")
            # Progressive columns and soft copies keep standardisers of their own (every column).
            if self.progressive or self.soft_layers is not None:
                raise ValueError("scaled_columns apply to shared and per-tag heads only")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {self.hidden}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input_dim": self.input_dim, "hidden": list(self.hidden),
                               "num_classes": self.num_classes}
        if self.tag_heads is not None:  # absent in shared mode: those blobs stay as they were
            out["tag_heads"] = [[t, list(cs)] for t, cs in self.tag_heads]
        if self.progressive:
            out["progressive"] = True
        if self.column_hidden is not None:
            out["column_hidden"] = list(self.column_hidden)
        if self.soft_layers is not None:
            out["soft_layers"] = list(self.soft_layers)
        if self.scaled_columns is not None:  # absent for vectors: their blobs stay as they were
            out["scaled_columns"] = list(self.scaled_columns)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPConfig:
        unknown = set(d) - {"input_dim", "hidden", "num_classes", "tag_heads", "progressive",
                            "column_hidden", "soft_layers", "scaled_columns"}
        if unknown:
            raise ValueError(f"unknown MLPConfig keys: {sorted(unknown)}")
        heads = d.get("tag_heads")
        return cls(input_dim=int(d["input_dim"]), hidden=tuple(d.get("hidden", (128, 128))),
                   num_classes=int(d.get("num_classes", 0)),
                   tag_heads=None if heads is None else tuple((t, tuple(cs)) for t, cs in heads),
                   progressive=bool(d.get("progressive", False)),
                   column_hidden=None if d.get("column_hidden") is None
                   else tuple(d["column_hidden"]),
                   soft_layers=None if d.get("soft_layers") is None
                   else tuple(d["soft_layers"]),
                   scaled_columns=None if d.get("scaled_columns") is None
                   else tuple(d["scaled_columns"]))


class Standardizer(nn.Module):
    """Running mean/variance of the inputs (Chan et al. parallel merge), applied as a z-score.

    Statistics are float64 buffers so they survive long streams without drift and travel in
    `state_dict`; the float32 shift/scale/bounds used by `forward` are derived, non-persistent
    buffers refreshed after every update and every load, keeping the serving path to three ops.
    """

    def __init__(self, dim: int, eps: float = 1e-5, clip: float | None = 10.0,
                 scaled: Sequence[int] | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        # `scaled`: the columns transformed; the others pass as they are (their statistics are
        # still kept). One-hot columns do not want a z-score: a rare category's 1 became ~+10
        # and a slot first hit at serve time (variance 0 so far) jumped from 0 to the clip.
        self.scaled = None if scaled is None else tuple(scaled)
        # A feature that was (nearly) constant so far has a tiny variance, and its first
        # different value would become a z-score in the thousands; clipping bounds that shock.
        self.clip = math.inf if clip is None else clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(dim), persistent=False)
        self.register_buffer("scale", torch.ones(dim), persistent=False)
        # ±inf until the first update, so the untrained transform is exactly the identity.
        self.register_buffer("lo", torch.full((dim,), -math.inf), persistent=False)
        self.register_buffer("hi", torch.full((dim,), math.inf), persistent=False)
        if self.scaled is not None:  # only then: a vector model's buffers stay as they were
            passed = torch.ones(dim, dtype=torch.bool)
            passed[list(self.scaled)] = False
            self.register_buffer("passed", passed, persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @property
    def var(self) -> Tensor:
        """Population variance; 1 before any data so the transform starts as the identity."""
        if self.count.item() == 0:
            return torch.ones_like(self.m2)
        return self.m2 / self.count

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        xb = x.detach().to(self.mean.device, torch.float64).reshape(-1, self.dim)
        n_b = xb.shape[0]
        if n_b == 0:
            return
        mean_b = xb.mean(0)
        m2_b = (xb - mean_b).square_().sum(0)
        # Counts as Python floats (exact below 2**53): the same float64 arithmetic as 0-dim
        # tensors, without a tensor op for each scalar; in-place ops where a temporary was.
        n_a = self.count.item()
        n = n_a + n_b
        delta = mean_b.sub_(self.mean)
        # (1 / n) * n_b, not n_b / n: what `n_b / tensor` (Tensor.__rtruediv__) computed.
        self.mean.add_(delta * ((1.0 / n) * n_b))
        self.m2.add_(m2_b.add_(delta.square_().mul_(n_a * n_b / n)))
        self.count.add_(n_b)
        self._refresh(n)

    @torch.no_grad()
    def refresh(self) -> None:
        self._refresh(self.count.item())

    def _refresh(self, count: float) -> None:
        fitted = count > 0
        self.shift.copy_(self.mean)
        if fitted:  # rsqrt(var + eps), var = m2 / count as in `var`
            self.scale.copy_(torch.div(self.m2, count).add_(self.eps).rsqrt_())
        else:
            self.scale.fill_(1.0)
        bound = self.clip if fitted else math.inf
        self.lo.fill_(-bound)
        self.hi.fill_(bound)
        if self.scaled is not None:  # the identity on the passed columns, exactly
            passed = self.passed
            self.shift.masked_fill_(passed, 0.0)
            self.scale.masked_fill_(passed, 1.0)
            self.lo.masked_fill_(passed, -math.inf)
            self.hi.masked_fill_(passed, math.inf)

    def forward(self, x: Tensor) -> Tensor:
        return standardize(x, self.shift, self.scale, self.lo, self.hi)


def standardize(x: Tensor, shift: Tensor, scale: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Standardizer's transform on its buffers (also the serving fast path's, on their values)."""
    return torch.clamp((x - shift) * scale, lo, hi)


def run_trunk(body: nn.Sequential, h: Tensor) -> Tensor:
    """body(h) with its Linear and ReLU layers called as functions: nn.Module.__call__ costs
    ~4 µs a layer (hook checks). Same ops on the same operands, so bit-identical; any other
    layer is called as a module. Callers make sure no hooks are registered where it matters
    (the learner registers none; serving checks)."""
    for layer in body:
        if type(layer) is nn.Linear:
            h = F.linear(h, layer.weight, layer.bias)
        elif type(layer) is nn.ReLU and not layer.inplace:
            h = F.relu(h)
        else:
            h = layer(h)
    return h


def _refresh_after_load(module: nn.Module, _incompatible: Any) -> None:
    assert isinstance(module, Standardizer)
    module.refresh()


class GrowableHead(nn.Module):
    """The output layer: nn.Linear's parameters and init, plus rows that can be appended.

    BLAS picks its kernel by the number of output rows (measured with MKL: growing 1 -> 2 rows,
    or 3 -> 4 at batch size 1, changed the old logits' last bits), so logits are computed over
    zero-padded blocks of BLOCK rows. A block's shape never changes when rows are added, so
    every old logit keeps exactly the same arithmetic.
    """

    BLOCK = 64

    def __init__(self, in_features: int, out_features: int = 0) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.bias = nn.Parameter(torch.empty(0))
        self._cache: tuple[Tensor, Tensor] = (self.weight, self.bias)
        self._cache_key: tuple[Any, ...] | None = None
        self.grow(out_features)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def _padded(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        n = weight.shape[0]
        pad = max(self.BLOCK, -(-n // self.BLOCK) * self.BLOCK) - n
        return F.pad(weight, (0, 0, 0, pad)), F.pad(bias, (0, pad))

    def forward(self, h: Tensor) -> Tensor:
        weight, bias = self.weight, self.bias  # one Module.__getattr__ each: this is hot
        if weight.requires_grad or bias.requires_grad:
            w, b = self._padded(weight, bias)
        else:
            # A frozen head (a published snapshot) pads once. Only frozen ones: fused optimizers
            # update trainable parameters without bumping their version counters.
            key = (weight._version, bias._version, weight.data_ptr(), bias.data_ptr(),
                   weight.shape[0])
            if self._cache_key != key:
                with torch.no_grad():
                    self._cache = self._padded(weight, bias)
                self._cache_key = key
            w, b = self._cache
        if w.shape[0] == self.BLOCK:
            out = F.linear(h, w, b)
        else:
            out = torch.cat([F.linear(h, w[i : i + self.BLOCK], b[i : i + self.BLOCK])
                             for i in range(0, w.shape[0], self.BLOCK)], dim=-1)
        return out[..., : weight.shape[0]]

    @torch.no_grad()
    def grow(self, new_out: int, generator: torch.Generator | None = None) -> None:
        """Append rows; the old rows stay bit-identical. Replaces the Parameters, so optimizers
        and strategies must be told.

        New weights get nn.Linear's init range; new biases start at the smallest old bias so an
        unseen class starts below every known one instead of stealing their predictions.
        """
        old_n = self.out_features
        if new_out < old_n:
            raise ValueError(f"cannot shrink the head from {old_n} to {new_out}")
        if new_out == old_n:
            return
        w, b, k = self.weight, self.bias, new_out - old_n
        bound = 1.0 / math.sqrt(self.in_features)

        def uniform(*shape: int) -> Tensor:
            return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

        new_w = uniform(k, self.in_features)
        new_b = b.min().expand(k).cpu() if old_n > 0 else uniform(k)
        self.weight = nn.Parameter(torch.cat([w, new_w.to(w)]), w.requires_grad)
        self.bias = nn.Parameter(torch.cat([b, new_b.to(b)]), b.requires_grad)


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.input_dim = config.input_dim
        self.hidden = config.hidden
        self.scaled_columns = config.scaled_columns
        self.standardizer = Standardizer(config.input_dim, scaled=config.scaled_columns)
        layers: list[nn.Module] = []
        width = config.input_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = GrowableHead(width, config.num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def config(self) -> MLPConfig:
        return MLPConfig(self.input_dim, self.hidden, self.num_classes,
                         scaled_columns=self.scaled_columns)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.standardizer(x)))

    def features(self, x: Tensor) -> Tensor:
        """The trunk's output: what every head reads."""
        return self.body(self.standardizer(x))

    def grow_head(self, new_num_classes: int, generator: torch.Generator | None = None) -> None:
        """Add output classes; every old logit stays bit-identical (see GrowableHead)."""
        self.head.grow(new_num_classes, generator)


class MultiHeadMLP(MLP):
    """MNEMO_HEADS=per-tag: the shared trunk, the default head over every class (what
    `forward` answers, for an absent or unknown tag), and one head per tag over the classes
    seen with that tag, in first-seen order. Adding a tag or a class to one head leaves every
    other output bit-identical."""

    PROGRESSIVE = False

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        self.tag_heads = nn.ModuleDict()  # keys "t0", "t1", ...: tags may hold "." and ":"
        self._classes: dict[str, list[int]] = {}
        self.column_hidden = config.column_hidden
        self._init_tag_modules()
        for tag, classes in config.tag_heads or ():
            self._head_for(tag).grow(len(classes))
            self._classes[tag] = list(classes)

    def _init_tag_modules(self) -> None:
        """Modules a subclass keeps per tag besides the heads, made before the tags replay."""
        return None

    @property
    def config(self) -> MLPConfig:
        heads = tuple((t, tuple(cs)) for t, cs in self._classes.items())
        return MLPConfig(self.input_dim, self.hidden, self.num_classes, heads, self.PROGRESSIVE,
                         self.column_hidden, scaled_columns=self.scaled_columns)

    @property
    def tags(self) -> list[str]:
        return list(self._classes)

    def tag_classes(self, tag: str | None) -> list[int] | None:
        """The classes of the tag's head, row by row; None when it has none (default head)."""
        return None if tag is None else self._classes.get(tag)

    def _head_for(self, tag: str) -> GrowableHead:
        if tag not in self._classes:
            self._classes[tag] = []
            self.tag_heads[f"t{len(self.tag_heads)}"] = GrowableHead(self._new_head_inputs()).to(
                self.head.weight)
        return self.tag_heads[f"t{list(self._classes).index(tag)}"]  # type: ignore[return-value]

    def _new_head_inputs(self) -> int:
        """The width a new tag's head reads: the shared trunk's output."""
        return self.head.in_features

    def trainable_tag(self, tag: str) -> bool:
        """Whether the tag's head still learns (progressive columns freeze older ones)."""
        return tag in self._classes and self.tag_head(tag).weight.requires_grad

    def observe_tags(self, x: Tensor, tags: list[str]) -> None:
        """New (not replayed) inputs with their tags; per-tag heads share the standardiser."""
        return None

    def tag_head(self, tag: str) -> GrowableHead:
        if tag not in self._classes:
            raise KeyError(tag)
        return self._head_for(tag)

    def add_tag_classes(self, tag: str, classes: list[int],
                        generator: torch.Generator | None = None) -> None:
        """Make the tag's head if new and append rows for the classes it does not have yet."""
        if any(not 0 <= c < self.num_classes for c in classes):
            raise ValueError(f"classes {classes} outside [0, {self.num_classes})")
        head = self._head_for(tag)
        known = self._classes[tag]
        new = [c for c in dict.fromkeys(classes) if c not in known]
        if new:
            head.grow(len(known) + len(new), generator)
            known.extend(new)

    def forward_tag(self, x: Tensor, tag: str) -> Tensor:
        """Logits of the tag's head (its classes, see tag_classes)."""
        return self.tag_head(tag)(self.features(x))

    def classify(self, x: Tensor, tag: str | None) -> Tensor:
        """Global class indices: the tag's head where it has one, else the default head."""
        classes = self.tag_classes(tag)
        if not classes:
            return self(x).argmax(1)
        return torch.tensor(classes, device=x.device)[self.forward_tag(x, tag).argmax(1)]  # type: ignore[arg-type]

    def tag_logits_from(self, h: Tensor, x: Tensor, tag: str) -> Tensor:
        """forward_tag given the trunk's features h of x, computed once for every head."""
        return self.tag_head(tag)(h)


def build_model(config: MLPConfig, seed: int | None = None) -> MLP:
    cls: type[MLP] = MLP if config.tag_heads is None else MultiHeadMLP
    if config.progressive:
        from models.progressive import ProgressiveMLP  # it builds on this module

        cls = ProgressiveMLP
    elif config.soft_layers is not None:
        from models.soft_sharing import SoftSharedMLP  # it builds on this module

        cls = SoftSharedMLP
    if seed is None:
        return cls(config)
    # A private RNG stream: seeding must not disturb the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)
