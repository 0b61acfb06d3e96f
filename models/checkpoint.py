"""Model and learner-state blobs in safetensors (never pickle: blobs cross process boundaries)."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from models.features import RecordEncoder
from models.nets import MLP, MLPConfig, build_model
from models.rebind import rebind

CONFIG_KEY = "config"
# Weights blobs name their head's rows (a JSON list of label texts), so a checkpoint used to
# start another deployment (MNEMO_INIT_CHECKPOINT) maps its rows to labels by name.
LABELS_KEY = "labels"
# A deployment with a feature schema: the encoder's state (schema, vocabularies, hashing seed)
# as JSON, so a version carries the encoding its weights were trained under (models/features.py).
FEATURES_KEY = "features"
# safetensors has no checksum of its own: without one, flipped data bytes load silently.
CHECKSUM_KEY = "blake2b"


class CheckpointError(ValueError):
    """A blob that is not a valid checkpoint, or does not fit the model it describes."""


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # its buffer: no copy
    return h.hexdigest()


def tensors_to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    # safetensors wants contiguous CPU tensors that share no storage.
    plain = {k: t.detach().cpu().contiguous().clone() for k, t in tensors.items()}
    md = dict(metadata or {})
    bad = {k: v for k, v in md.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise TypeError(f"metadata keys and values must be str, got {bad!r}")
    if CHECKSUM_KEY in md:
        raise ValueError(f"metadata key {CHECKSUM_KEY!r} is reserved for the checksum")
    md[CHECKSUM_KEY] = _digest(plain)
    return st_save(plain, metadata=md)


def _read_metadata(blob: bytes) -> dict[str, str]:
    # safetensors.torch.load drops the metadata, so read the JSON header ourselves.
    if len(blob) < 8:
        raise CheckpointError(f"blob too short to be safetensors ({len(blob)} bytes)")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise CheckpointError(f"safetensors header length {n} exceeds blob size {len(blob)}")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"unreadable safetensors header: {e}") from e
    md = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(md) if isinstance(md, dict) else {}


def blob_metadata(blob: bytes) -> dict[str, str]:
    """A blob's metadata from its header alone (no tensor is read, nothing is verified)."""
    return _read_metadata(blob)


def has_checksum(blob: bytes) -> bool:
    """Whether the blob was written by tensors_to_bytes (it carries our checksum)."""
    return CHECKSUM_KEY in _read_metadata(blob)


def tensors_from_bytes(blob: bytes) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and the caller's metadata; raises CheckpointError unless the checksum matches."""
    metadata = _read_metadata(blob)
    try:
        tensors = st_load(bytes(blob))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"invalid safetensors blob: {e}") from e
    expected = metadata.pop(CHECKSUM_KEY, None)
    if expected is None:
        raise CheckpointError("blob carries no checksum (not written by tensors_to_bytes)")
    if _digest(tensors) != expected:
        raise CheckpointError("checksum mismatch: the blob's tensor data is corrupted")
    return tensors, metadata


def model_to_bytes(model: MLP, metadata: dict[str, str] | None = None) -> bytes:
    md = dict(metadata or {})
    if CONFIG_KEY in md:
        raise ValueError(f"metadata key {CONFIG_KEY!r} is reserved for the model config")
    md[CONFIG_KEY] = json.dumps(model.config.to_dict())
    return tensors_to_bytes(model.state_dict(), md)


def labels_metadata(labels: list[str]) -> dict[str, str]:
    return {LABELS_KEY: json.dumps([str(label) for label in labels])}


def features_metadata(encoder: RecordEncoder | None) -> dict[str, str]:
    return {} if encoder is None else {FEATURES_KEY: encoder.state_json()}


def encoder_from_metadata(metadata: dict[str, str]) -> RecordEncoder | None:
    """The record encoder a weights blob carries; None for a vector model."""
    text = metadata.get(FEATURES_KEY)
    if text is None:
        return None
    try:
        return RecordEncoder.from_json(text)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"invalid feature encoder in checkpoint: {e}") from e


def model_from_bytes(blob: bytes, template: MLP | None = None) -> tuple[MLP, dict[str, str]]:
    """Rebuild a model from its blob alone, for serving: eval mode, parameters frozen
    (requires_grad_(True) to train it), plus the caller's metadata. With a `template` loaded
    this way (the version being served), a blob of the same config is bound to a copy of it
    instead of a new build (models/rebind.py: the same module, a fraction of the CPU)."""
    tensors, md = tensors_from_bytes(blob)
    if CONFIG_KEY not in md:
        raise CheckpointError("checkpoint has no model config in its metadata")
    try:
        config = MLPConfig.from_dict(json.loads(md.pop(CONFIG_KEY)))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"invalid model config in checkpoint: {e}") from e
    if template is not None and template.config == config:
        rebound = rebind(template, tensors)
        if rebound is not None:  # a copy of the template's class: an MLP
            return rebound.requires_grad_(False).eval(), md  # type: ignore[return-value]
    model = build_model(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint does not match its config: {e}") from e
    return model.requires_grad_(False).eval(), md
