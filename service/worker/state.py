"""Building and restoring the learner from a published version (weights + learner state)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from models.checkpoint import model_from_bytes, tensors_from_bytes
from models.generative import GenerativeReplay
from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.replay import GENERATIVE
from models.strategies import make_strategy
from service.config import Settings


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _generator(settings: Settings) -> GenerativeReplay | None:
    """MNEMO_BUFFER=generative: the replay model, learner state like the network."""
    if settings.buffer != GENERATIVE:
        return None
    return GenerativeReplay(settings.input_dim, settings.max_classes)


def new_learner(settings: Settings, config: MLPConfig) -> IncrementalLearner:
    learner = IncrementalLearner(
        config, make_strategy(settings.penalty),
        device=resolve_device(settings.device), generator=_generator(settings),
    )
    learner.freeze(settings.freeze)
    return learner


def restore(settings: Settings, weights: bytes, state: bytes | None) -> tuple[IncrementalLearner, nn.Module]:
    """The learner to continue from, and the served model (frozen CPU copy) it starts from.
    Version 0 has no learner state: a fresh learner takes its weights."""
    served, _ = model_from_bytes(weights)
    served.eval()
    config = served.config
    if settings.routes_by_tag and config.tag_heads is None:
        # A shared-head deployment switched to per-tag heads or progressive columns: same
        # tensors, no tag heads or columns yet. (Switched back, they stay in the versions but
        # neither learn nor serve; per-tag heads and columns do not convert into each other.)
        progressive = settings.penalty == "progressive"
        config = replace(config, tag_heads=(), progressive=progressive,
                         column_hidden=(tuple(settings.column_hidden) or None)
                         if progressive else None)
    if state is not None:
        tensors, meta = tensors_from_bytes(state)
        learner = IncrementalLearner.from_state(
            config, make_strategy(settings.penalty), tensors, meta,
            device=resolve_device(settings.device), generator=_generator(settings),
        )
        learner.freeze(settings.freeze)  # MNEMO_FREEZE of this start, not of the saved one
    else:
        learner = new_learner(settings, config)
        learner.model.load_state_dict(served.state_dict())
    for p in served.parameters():
        p.requires_grad_(False)
    learner.on_publish()  # LwF distils from the version being continued from
    return learner, served
