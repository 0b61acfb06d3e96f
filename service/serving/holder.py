"""The served model: an immutable (version, module) pair swapped by one reference assignment,
so a request that already holds a ServedModel finishes on it while the next one sees the new."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint import encoder_from_metadata, model_from_bytes
from models.features import Record, RecordEncoder
from service.serving.fast_forward import Forward, checked_forward, plain_forward

PROBE_ROWS = 8  # rows on which a fast forward must match the module's exactly


@dataclass(frozen=True)
class ServedModel:
    version: int
    epoch: int
    labels: list[str | int]
    module: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    # The module's forward without its call machinery (serving/fast_forward.py), or None.
    fast: Forward | None = field(default=None, repr=False, compare=False)
    # A deployment with a feature schema: the encoding this version was trained under.
    encoder: RecordEncoder | None = field(default=None, repr=False, compare=False)

    @cached_property
    def parameter_count(self) -> int:
        """Multiply-adds per row, roughly: how costly a forward pass of n rows is."""
        return sum(p.numel() for p in self.module.parameters())

    def matrix(self, rows: np.ndarray | Sequence[Record]) -> np.ndarray:
        """float32 rows for the network: vectors as they are, records through this version's
        encoder (so a request is encoded and answered by the same version)."""
        if isinstance(rows, np.ndarray):
            return rows
        if self.encoder is None:
            raise ValueError(f"version {self.version} has no feature encoder: it was trained on "
                             "vectors, not records (MNEMO_FEATURES changed?)")
        return self.encoder.encode(rows)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = (self.fast or self.module)(torch.from_numpy(x))
            return torch.softmax(logits, dim=1).numpy()


def use_one_compute_thread() -> None:
    """For an API process: its forward passes are small, and torch's intra-op threads then
    spin and contend with the event loop (measured 10-20x slower per pass on 2 busy cores);
    parallelism comes from more API processes instead."""
    torch.set_num_threads(1)


def load_served(blob: bytes, meta: dict[str, Any], epoch: int,
                previous: ServedModel | None = None) -> ServedModel:
    """Build a ready-to-serve model from a weights blob (safetensors) and its version meta.

    Given the version being served, a blob of the same architecture is bound to a copy of its
    module (models/rebind.py), and a fast forward it was checked to have is taken on trust:
    the check compares ops, which a new version of the same architecture shares."""
    module, metadata = model_from_bytes(blob, None if previous is None else previous.module)
    encoder = encoder_from_metadata(metadata)
    labels = list(meta["labels"])
    if len(labels) != _num_outputs(module):
        raise ValueError(
            f"version {meta['version']}: {len(labels)} labels but {_num_outputs(module)} outputs"
        )
    config = module.config
    if (previous is not None and previous.fast is not None
            and type(previous.module) is type(module) and previous.module.config == config):
        fast = plain_forward(module)
    else:
        probe = torch.from_numpy(np.random.default_rng(0).normal(
            size=(PROBE_ROWS, config.input_dim)).astype(np.float32))
        fast = checked_forward(module, probe)
    served = ServedModel(meta["version"], epoch, labels, module, meta, fast, encoder)
    if labels:  # warm the first-call paths before any request sees it
        served.predict_proba(np.zeros((1, config.input_dim), dtype=np.float32))
    return served


def _num_outputs(module: nn.Module) -> int:
    return int(module.config.num_classes)


class ModelHolder:
    def __init__(self) -> None:
        self._served: ServedModel | None = None

    @property
    def served(self) -> ServedModel | None:
        return self._served

    def swap(self, served: ServedModel) -> None:
        self._served = served
