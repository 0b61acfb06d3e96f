"""Building and restoring the learner from a published version (weights + learner state)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from models.checkpoint import model_from_bytes, tensors_from_bytes
from models.drift import DriftDetector, make_detector
from models.generative import GenerativeReplay
from models.holdout import Holdout
from models.learner import IncrementalLearner
from models.meta_start import make_meta_start
from models.nets import MLPConfig
from models.replay import GENERATIVE, ReplayBuffer
from models.strategies import Strategy, make_strategy
from models.strategies.soft_sharing import SoftSharing
from models.stream import StreamParams, StreamStep, split_state
from service.config import Settings

# MNEMO_PRECISION=auto trains in bf16 only on a CUDA device with bf16 and a hidden layer at
# least this wide. From the H200 figures in BENCHMARKS.md (fp32, ms per learn_many): the small
# 64→128→128→10 MLP takes 5.35 / 4.81 ms at chunk 32 / 256, the large 784→1024→1024→100 (73×
# the parameters) 5.23 / 5.69 ms. Both are launch-bound at ~5 ms, and everything that grows
# with the model, the arithmetic bf16 could speed up, is at most the large one's extra 0.9 ms;
# below this width autocast's extra cast kernels only add launches to a launch-bound step.
# That work grows with width², so it reaches the ~5 ms floor near 1024·√(5/0.9) ≈ 2400: at
# 2048 it is ~3.6 ms, a share bf16 can cut. The bench's `xl` size (2048 wide) measures it.
AUTO_BF16_MIN_WIDTH = 2048


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def resolve_precision(setting: str, device: str, config: MLPConfig, *,
                      bf16_supported: bool) -> str:
    """MNEMO_PRECISION for a resolved device and the network: "fp32" or "bf16". A pure
    function (bf16_supported: what torch.cuda.is_bf16_supported() says on that device), so
    the choice is testable without a GPU. On CPU `auto` is fp32: there bf16 autocast adds
    casts without faster matmuls (BENCHMARKS.md). An explicit bf16 is honoured on CPU and
    refused on a CUDA device without bf16, rather than silently trained otherwise."""
    if setting == "fp32":
        return "fp32"
    cuda = device.startswith("cuda")
    if setting == "bf16":
        if cuda and not bf16_supported:
            raise ValueError("MNEMO_PRECISION=bf16: this CUDA device does not support "
                             "bfloat16; use fp32 or auto")
        return "bf16"
    if setting != "auto":
        raise ValueError(f"MNEMO_PRECISION: expected auto, fp32 or bf16, got {setting!r}")
    widest = max((*config.hidden, *(config.column_hidden or ())))
    return "bf16" if cuda and bf16_supported and widest >= AUTO_BF16_MIN_WIDTH else "fp32"


def _device_and_precision(settings: Settings, config: MLPConfig) -> dict[str, str]:
    device = resolve_device(settings.device)
    supported = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return {"device": device, "precision": resolve_precision(settings.precision, device, config,
                                                             bf16_supported=supported)}


def _generator(settings: Settings) -> GenerativeReplay | None:
    """MNEMO_BUFFER=generative: the replay model, learner state like the network."""
    if settings.buffer != GENERATIVE:
        return None
    return GenerativeReplay(settings.input_dim, settings.max_classes)


def _learning(settings: Settings) -> dict[str, float | int]:
    """The learner's hyperparameters: the settings of this start win over a saved state's."""
    return {"lr": settings.effective_learning_rate, "replay_size": settings.replay_batch,
            "steps_per_batch": settings.steps_per_batch}


def _strategy(settings: Settings) -> Strategy:
    strategy = make_strategy(settings.penalty, **settings.strategy_params)
    if settings.heads == "soft":  # the sharing penalty wraps whichever strategy runs
        return SoftSharing(strategy, settings.soft_sharing_strength)
    return strategy


def new_learner(settings: Settings, config: MLPConfig) -> IncrementalLearner:
    learner = IncrementalLearner(
        config, _strategy(settings), generator=_generator(settings),
        **_learning(settings), **_device_and_precision(settings, config),
    )
    learner.freeze(settings.freeze)
    return learner


def stream_params(settings: Settings) -> StreamParams:
    return StreamParams(
        consolidate_every=settings.effective_consolidate_every, drift_relax=settings.drift_relax,
        holdout_fraction=settings.holdout_fraction, max_tags=settings.max_tags,
        publish_first=settings.publish_first_samples, publish_every=settings.publish_every_samples,
        # Rehearsing a generator's samples pulls the classifier toward their artefacts: split
        # digits, class-incremental, 0.72 -> 0.54 (seed 0) with one step per sample.
        rehearsal=0.0 if settings.buffer == GENERATIVE else settings.rehearsal)


def new_detector(settings: Settings) -> DriftDetector | None:
    if settings.drift_detector == "none":
        return None
    return make_detector(settings.drift_detector, **settings.drift_params)


def new_step(settings: Settings, learner: IncrementalLearner, buffer: ReplayBuffer | None,
             seed: int | None = None) -> StreamStep:
    """The stream step the learner process and the benchmark drive, as these settings build it."""
    return StreamStep(learner, buffer, new_detector(settings),
                      Holdout(settings.holdout_size, settings.input_dim), stream_params(settings),
                      use_replay=settings.use_replay, routes_by_tag=settings.routes_by_tag,
                      seed=seed, meta_start=make_meta_start(settings.meta_start, seed or 0))


def restore(settings: Settings, weights: bytes,
            state: bytes | None) -> tuple[IncrementalLearner, nn.Module, dict[str, Tensor]]:
    """The learner to continue from, the served model (frozen CPU copy) it starts from, and
    the stream step's saved state (empty for version 0, which has no learner state: a fresh
    learner takes its weights)."""
    served, _ = model_from_bytes(weights)
    served.eval()
    config = served.config
    if settings.routes_by_tag and config.tag_heads is None:
        # A shared-head deployment switched to per-tag heads or progressive columns: same
        # tensors, no tag heads or columns yet. (Switched back, they stay in the versions but
        # neither learn nor serve; per-tag heads and columns do not convert into each other.)
        progressive = settings.penalty == "progressive"
        soft = settings.soft_copied_layers
        # Columns and soft copies standardise every input column (MLPConfig refuses the mask).
        config = replace(config, tag_heads=(), progressive=progressive,
                         column_hidden=(tuple(settings.column_hidden) or None)
                         if progressive else None, soft_layers=soft,
                         scaled_columns=None if progressive or soft is not None
                         else config.scaled_columns)
    stream: dict[str, Tensor] = {}
    if state is not None:
        tensors, meta = tensors_from_bytes(state)
        tensors, stream = split_state(tensors)
        learner = IncrementalLearner.from_state(
            config, _strategy(settings), tensors, meta, generator=_generator(settings),
            **_learning(settings), **_device_and_precision(settings, config),
        )
        learner.freeze(settings.freeze)  # MNEMO_FREEZE of this start, not of the saved one
    else:
        learner = new_learner(settings, config)
        learner.model.load_state_dict(served.state_dict())
    for p in served.parameters():
        p.requires_grad_(False)
    learner.on_publish()  # LwF distils from the version being continued from
    return learner, served, stream
