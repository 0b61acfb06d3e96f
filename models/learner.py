"""IncrementalLearner: one network, one optimizer, one strategy, and everything a restart needs."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.expand import widen
from models.fused_adam import fused_adam_step
from models.generative import GenerativeReplay
from models.nets import MLP, MLPConfig, MultiHeadMLP, build_model, run_trunk
from models.replay import ReplayBuffer
from models.strategies.base import Strategy
from models.tag_replay import TagPart, TagRows, replays_by_tag, sample_replay, tag_loss, tag_rows
from models.tensor_utils import grow_zeros
from models.transfer import STANDARDIZER, freeze_layers, resolve_freeze

# Defaults measured with `python -m models.bench_digits` (one pass over digits, batches of 16).
DEFAULT_LR = 2e-3
DEFAULT_REPLAY_SIZE = 64
DEFAULT_STEPS_PER_BATCH = 2

_PREFIXES = ("model.", "optim.", "strategy.", "generator.")
_TEACHER = "teacher."
_HPARAMS = {"lr": float, "replay_size": int, "steps_per_batch": int, "seed": int}
# Resolved training precisions (MNEMO_PRECISION's `auto` is resolved by the worker). Not saved
# in meta: like the device, each start decides it, and every saved tensor is float32 either way.
PRECISIONS = ("fp32", "bf16")
# fp32 steps enter a nullcontext (0.2 µs), not a disabled autocast (~5 µs here, per step).
_FP32 = contextlib.nullcontext()


@dataclass
class StepStats:
    loss: float  # mean cross-entropy over the steps, each on new ∪ replay, before its update
    penalty: float  # both NaN when learn_many was asked not to report them
    samples: int
    steps: int


def _training_logits(model: MLP, x: Tensor) -> Tensor:
    """model(x) for a gradient step. A plain MLP's head is applied unpadded: GrowableHead pads
    to blocks of 64 rows only so that served logits stay bit-identical when the head grows,
    which a step does not need, and the padded forward+backward of 96 rows costs 200 µs
    against 120 µs (this CPU, one thread). Same logits up to float rounding."""
    if type(model) is not MLP:
        return model(x)
    h = run_trunk(model.body, model.standardizer.forward(x))  # no module calls, same ops
    head = model.head
    return F.linear(h, head.weight, head.bias)


class IncrementalLearner:
    def __init__(self, config: MLPConfig, strategy: Strategy, *, lr: float = DEFAULT_LR,
                 replay_size: int = DEFAULT_REPLAY_SIZE,
                 steps_per_batch: int = DEFAULT_STEPS_PER_BATCH, device: str = "cpu",
                 seed: int = 0, generator: GenerativeReplay | None = None,
                 precision: str = "fp32") -> None:
        if steps_per_batch < 1 or replay_size < 0 or lr <= 0:
            raise ValueError("need steps_per_batch >= 1, replay_size >= 0 and lr > 0")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.strategy = strategy
        self.lr, self.replay_size, self.steps_per_batch = lr, replay_size, steps_per_batch
        self.seed = seed
        self.device = torch.device(device)
        # One CPU generator drives replay sampling and head growth, and is saved with the state.
        self._gen = torch.Generator().manual_seed(seed)
        self._model = build_model(config, seed).to(self.device).train()
        # fused: one kernel for all parameters; on this CPU a step costs 66 µs against 172 µs
        # (foreach) and 202 µs (per-tensor loop), about a third of each learn_many.
        self._opt = torch.optim.Adam(self._model.parameters(), lr=lr, fused=True)
        self.samples_seen = 0
        self.steps_done = 0
        self.frozen: tuple[str, ...] = ()
        # MNEMO_BUFFER=generative: the replay source is a model, so it is learner state.
        self.generator = generator

    def freeze(self, layers: list[str] | tuple[str, ...]) -> None:
        """Stop training the named layers (models/transfer.py: names and aliases); a frozen
        standardiser stops updating its input statistics. Frozen parameters get no gradient,
        so the optimizer and the strategies (trainable parameters only) leave them alone."""
        self.frozen = resolve_freeze(self.config, layers)
        trainable = {k for k, p in self._model.named_parameters() if p.requires_grad}
        freeze_layers(self._model, self.frozen)
        now_frozen = trainable - {k for k, p in self._model.named_parameters() if p.requires_grad}
        if now_frozen:
            # Per-parameter strategy state (importance, anchors, omega: `<kind>.<param>`) covers
            # trainable parameters only; a state saved under another MNEMO_FREEZE loses the
            # entries of the layers frozen now. LwF's teacher is a whole-model snapshot: kept.
            state = self.strategy.state_dict()
            self.strategy.load_state_dict({
                k: v for k, v in state.items()
                if k.startswith(_TEACHER) or k.partition(".")[2] not in now_frozen})

    @property
    def model(self) -> MLP:
        return self._model

    @property
    def optimizer(self) -> torch.optim.Adam:
        return self._opt

    @property
    def config(self) -> MLPConfig:
        return self._model.config

    @property
    def num_classes(self) -> int:
        return self._model.num_classes

    def ensure_classes(self, n: int) -> None:
        """Grow the head to n classes, and with it the optimizer and strategy state."""
        if n <= self.num_classes:
            return
        old = dict(self._model.named_parameters())
        self._model.grow_head(n, self._gen)
        self._follow_parameters(old)

    def ensure_tags(self, tags: Sequence[str], y: Tensor, max_tags: int) -> None:
        """Per-tag heads: give each tag (up to max_tags heads; "" is no tag) rows for the
        classes it comes with. Tags beyond the cap, like absent ones, use the default head."""
        model = self._model
        if not isinstance(model, MultiHeadMLP):
            raise TypeError("ensure_tags needs a per-tag model (MLPConfig.tag_heads)")
        wanted: dict[str, list[int]] = {}
        for tag, c in zip(tags, y.tolist(), strict=True):
            known = model.tag_classes(tag)
            if not tag or (known is not None and c in known):
                continue
            new_tag = known is None and tag not in wanted
            if new_tag and len(model.tags) + len(wanted) >= max_tags:
                continue  # over the cap: this tag stays on the default head
            wanted.setdefault(tag, []).append(int(c))
        if not wanted:
            return
        old = dict(model.named_parameters())
        for tag, classes in wanted.items():
            model.add_tag_classes(tag, classes, self._gen)
        self._follow_parameters(old)

    def _follow_parameters(self, old: dict[str, nn.Parameter]) -> None:
        """After heads grew or appeared: optimizer moments and strategy state follow the new
        Parameters (old entries kept, new ones zero); frozen layers stay frozen."""
        new = dict(self._model.named_parameters())
        for name, p in new.items():
            q = old.get(name)
            if p is q:
                continue
            if q is not None:
                p.requires_grad_(q.requires_grad)
            state = self._opt.state.pop(q, None) if q is not None else None
            if state:
                self._opt.state[p] = {k: grow_zeros(v, p.shape) if v.shape == q.shape else v
                                      for k, v in state.items()}
        self._opt.param_groups[0]["params"] = list(new.values())  # the learner's only group
        self.strategy.grow(self._model)

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        self._model.eval()
        logits = self._model(x.to(self.device, torch.float32))
        return torch.softmax(logits, dim=-1).float().cpu()

    def _check_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(x, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.int64)
        # The model's input_dim, not self.config's: that builds and validates an MLPConfig.
        dim = self._model.input_dim
        if x.dim() != 2 or x.shape[1] != dim or y.shape != (x.shape[0],):
            raise ValueError(f"expected x (N, {dim}) and y (N,), "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if y.numel():
            lowest, highest = torch.aminmax(y)  # one pass, not min() and max()
            if int(lowest) < 0 or int(highest) >= self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes}); "
                                 "call ensure_classes first")
        return x, y

    def _step_precision(self) -> contextlib.AbstractContextManager[Any]:
        """The context of a training step's forward and loss. bf16: autocast runs the matmuls
        in bfloat16 against float32 parameters (autograd casts their gradients back to
        float32), so the optimizer, its state and every published or saved tensor stay float32;
        bfloat16 has float32's exponent range, so no GradScaler. Cross-entropy comes out float32
        (autocast's rule on CPU and CUDA). The strategy's loss term runs inside it too: the only
        one (LwF) casts its logits to float32 before its log_softmax and KL, so only its
        teacher's no-grad forward gets bf16 matmuls, like the student's. Everything else a
        strategy does runs outside it, in float32: apply_to_grads on the float32 .grad, the
        penalties, Fisher/MAS/SI consolidation. Those weigh (θ - θ*)² by importances, where θ
        and its anchor θ* differ in digits that bfloat16's 8-bit mantissa would round away."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return _FP32

    def learn_many(self, x: Tensor, y: Tensor, buffer: ReplayBuffer | None = None,
                   tags: Sequence[str] | None = None, *, report: bool = True,
                   buffer_tags: Sequence[str] | None = None) -> StepStats:
        """Train on a batch (plus a replay sample). With per-tag heads and `tags` (one per
        row, "" for none), each tagged row also trains its tag's head (ensure_tags first);
        with `buffer_tags` (one per buffer slot), so does each replayed row
        (models/tag_replay.py). `report=False` leaves loss and penalty NaN: evaluating the
        penalty costs about a step's Adam update, wasted on every chunk of a read but the last
        (what the learner reports)."""
        x, y = self._check_batch(x, y)
        tagged = tag_rows(self._model, tags, y, self.device)
        if x.shape[0] == 0:
            return StepStats(0.0, 0.0, 0, 0)
        # The standardiser sees each new sample once; replayed samples were already counted.
        if STANDARDIZER not in self.frozen:
            self._model.standardizer.update(x)
        if tagged:
            self._model.observe_tags(x, list(tags or ()))  # progressive columns' own statistics
        if not self._model.training:  # a walk over every module: 18 µs a call
            self._model.train()
        losses, terms = self._train_steps(x, y, tagged, buffer, buffer_tags, self.steps_per_batch)
        self.samples_seen += x.shape[0]
        self.steps_done += self.steps_per_batch
        if not report:
            return StepStats(math.nan, math.nan, x.shape[0], self.steps_per_batch)
        # The reported penalty is the whole regulariser: the parameter penalty after the
        # steps plus the mean data-dependent term (LwF) over them.
        penalty = self.strategy.penalty(self._model)
        if terms:
            penalty = penalty + torch.stack(terms).mean()
        return StepStats(loss=torch.stack(losses).mean().item(), penalty=float(penalty),
                         samples=x.shape[0], steps=self.steps_per_batch)

    def _train_steps(self, x: Tensor, y: Tensor, tagged: list[TagRows],
                     buffer: ReplayBuffer | None, buffer_tags: Sequence[str] | None,
                     steps: int) -> tuple[list[Tensor], list[Tensor]]:
        """`steps` optimizer steps on (x, y) and a fresh replay sample each; the losses and
        strategy terms."""
        x, y = x.to(self.device), y.to(self.device)
        replay = buffer is not None and len(buffer) > 0 and self.replay_size > 0
        slot_tags = buffer_tags if replays_by_tag(self._model) else None
        losses, terms = [], []
        for _ in range(steps):
            bx, by, parts = x, y, [(tagged, x.shape[0])]
            if replay:
                assert buffer is not None
                rx, ry, rtags = sample_replay(buffer, self.replay_size, self._gen, slot_tags)
                bx = torch.cat([x, rx.to(self.device)])
                by = torch.cat([y, ry.to(self.device)])
                parts.append((tag_rows(self._model, rtags, ry, self.device,
                                       offset=x.shape[0], strict=False), ry.shape[0]))
            loss, term = self._gradient_step(bx, by, parts)
            losses.append(loss)
            if term is not None:
                terms.append(term)
        return losses, terms

    def _gradient_step(self, bx: Tensor, by: Tensor,
                       parts: list[TagPart]) -> tuple[Tensor, Tensor | None]:
        """One optimizer step on (bx, by), the tagged rows (`parts`: tag_rows into bx, new and
        replayed) also training their tags' heads: the detached cross-entropy and strategy
        loss term (None if it has none)."""
        model, strategy = self._model, self.strategy
        # Hook order is the Strategy protocol's contract (see models/strategies/base.py).
        strategy.before_step(model)
        with self._step_precision():
            if any(groups for groups, _ in parts):
                assert isinstance(model, MultiHeadMLP)
                h = model.features(bx)
                logits = model.head(h)
                loss = F.cross_entropy(logits, by) + tag_loss(model, h, bx, parts)
            else:
                logits = _training_logits(model, bx)
                loss = F.cross_entropy(logits, by)
            term = strategy.loss_term(model, bx, logits)
        # zero_grad(set_to_none=True) without its profiler context and foreach grouping.
        for p in self._opt.param_groups[0]["params"]:  # the learner's only group
            p.grad = None
        (loss if term is None else loss + term).backward()
        strategy.apply_to_grads(model)
        self._adam_step()
        strategy.after_step(model)
        return loss.detach(), None if term is None else term.detach()

    def rehearse(self, buffer: ReplayBuffer, steps: int,
                 buffer_tags: Sequence[str] | None = None) -> int:
        """`steps` optimizer steps on replay samples alone (replay_size rows each), for idle
        time; `buffer_tags` as in learn_many. The standardiser counted these rows when they
        were new; samples_seen too."""
        if steps <= 0 or len(buffer) == 0 or self.replay_size == 0:
            return 0
        self._model.train()
        slot_tags = buffer_tags if replays_by_tag(self._model) else None
        for _ in range(steps):
            rx, ry, rtags = sample_replay(buffer, self.replay_size, self._gen, slot_tags)
            rx, ry = rx.to(self.device), ry.to(self.device)
            groups = tag_rows(self._model, rtags, ry, self.device, strict=False)
            self._gradient_step(rx, ry, [(groups, ry.shape[0])])
        self.steps_done += steps
        return steps

    def catch_up(self, x: Tensor, y: Tensor, buffer: ReplayBuffer | None, steps: int,
                 lr_scale: float, tags: Sequence[str] | None = None,
                 buffer_tags: Sequence[str] | None = None) -> int:
        """`steps` optimizer steps on (x, y) plus a replay sample each, at `lr_scale` times
        the learning rate (tags as in learn_many; the rows were counted when learned). After a
        concept drift the new concept's first rows must reach the weights of a network long
        settled on the old one: at the base rate a confident network needs hundreds of labels
        to turn, and every answer it serves meanwhile is wrong."""
        x, y = self._check_batch(x, y)
        if steps <= 0 or x.shape[0] == 0:
            return 0
        tagged = tag_rows(self._model, tags, y, self.device, strict=False)
        self._model.train()
        rates = [group["lr"] for group in self._opt.param_groups]
        for group in self._opt.param_groups:
            group["lr"] *= lr_scale
        try:
            self._train_steps(x, y, tagged, buffer, buffer_tags, steps)
        finally:
            for group, rate in zip(self._opt.param_groups, rates, strict=True):
                group["lr"] = rate
        self.steps_done += steps
        return steps

    def _adam_step(self) -> None:
        fused_adam_step(self._opt)

    def consolidate(self, x: Tensor, y: Tensor) -> float:
        """Let the strategy anchor the current parameters; returns the seconds it took."""
        x, y = self._check_batch(x, y)
        start = time.perf_counter()
        self.strategy.consolidate(self._model, x.to(self.device), y.to(self.device))
        self._maybe_widen()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def _maybe_widen(self) -> None:
        """An expandable strategy (models/expand.py) may ask for hidden units after it
        consolidated; the network widens and every per-parameter state follows."""
        wanted = getattr(self.strategy, "units_wanted", None)
        units = wanted() if wanted is not None else 0
        if units:
            old = dict(self._model.named_parameters())
            widen(self._model, units, self._gen)
            self._follow_parameters(old)

    def on_publish(self) -> None:
        """Call when the current model was published or activated as the served version."""
        self.strategy.on_publish(self._model)

    def relax(self, factor: float) -> None:
        """Weaken (factor < 1) the strategy's regulariser, e.g. on concept drift; persisted."""
        self.strategy.relax(factor)

    def snapshot(self) -> MLP:
        """A detached CPU copy in eval mode: what gets published and served."""
        return copy.deepcopy(self._model).cpu().requires_grad_(False).eval()

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"model.{k}": v for k, v in self._model.state_dict().items()}
        for name, p in self._model.named_parameters():
            for k, v in self._opt.state.get(p, {}).items():
                out[f"optim.{name}.{k}"] = v
        out.update({f"strategy.{k}": v for k, v in self.strategy.state_dict().items()})
        if self.generator is not None:
            out.update({f"generator.{k}": v for k, v in self.generator.state_dict().items()})
        out["rng"] = self._gen.get_state()
        out["counters"] = torch.tensor([self.samples_seen, self.steps_done])
        return {k: v.detach().cpu().clone() for k, v in out.items()}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        unknown = [k for k in d if not k.startswith(_PREFIXES) and k not in ("rng", "counters")]
        if unknown or "model.head.weight" not in d:
            raise ValueError(f"not a learner state (unknown keys {unknown[:5]})")
        self.ensure_classes(d["model.head.weight"].shape[0])
        part = {p: {k.removeprefix(p): v for k, v in d.items() if k.startswith(p)}
                for p in _PREFIXES}
        self._model.load_state_dict(part["model."], strict=True)
        self._opt.state.clear()
        for name, p in self._model.named_parameters():
            state = {k.removeprefix(f"{name}."): v for k, v in part["optim."].items()
                     if k.startswith(f"{name}.")}
            # Fused Adam keeps every state tensor, step counters included, on p's device.
            self._opt.state[p] = {k: v.to(p.device).clone() for k, v in state.items()}
        # Own copies, so nothing the learner keeps aliases the caller's tensors.
        self.strategy.load_state_dict({k: v.to(self.device).clone()
                                       for k, v in part["strategy."].items()})
        if part["generator."] and self.generator is not None:  # else: switched to a buffer
            self.generator.load_state_dict(part["generator."])
        self._gen.set_state(d["rng"])
        self.samples_seen, self.steps_done = (int(v) for v in d["counters"])

    def meta(self) -> dict[str, str]:
        """String metadata for the state blob: model config, strategy name, hyperparameters."""
        out = {"config": json.dumps(self.config.to_dict()), "strategy": self.strategy.name}
        out.update({k: repr(getattr(self, k)) for k in _HPARAMS})
        out["frozen"] = json.dumps(list(self.frozen))  # a record: MNEMO_FREEZE decides each start
        return out

    @classmethod
    def from_state(cls, config: MLPConfig, strategy: Strategy, state: dict[str, Tensor],
                   meta: dict[str, str] | None = None, **kwargs: Any) -> IncrementalLearner:
        """Rebuild a learner; hyperparameters come from `meta` unless given in kwargs."""
        hparams = {k: cast(meta[k]) for k, cast in _HPARAMS.items() if meta and k in meta}
        learner = cls(config, strategy, **{**hparams, **kwargs})
        learner.load_state_dict(state)
        return learner
