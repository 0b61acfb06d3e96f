"""Transfer learning: start a network from a checkpoint, and freeze named layers.

Layer names follow the MLP's modules: `standardizer` (the input statistics), `body.0`,
`body.2`, … (the hidden Linear layers; the odd indices are ReLUs), `head`. Two aliases:
`body` (every hidden layer) and `trunk` (the standardiser and every hidden layer: a frozen
feature extractor whose input scaling cannot move under it either).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from models.checkpoint import LABELS_KEY, CheckpointError, has_checksum, tensors_from_bytes
from models.nets import MLP, MLPConfig, build_model

STANDARDIZER = "standardizer"
HEAD = "head"
NONE = "none"


def layer_names(config: MLPConfig) -> list[str]:
    """The freezable layers of a network with this config, input to output."""
    return [STANDARDIZER, *(f"body.{2 * i}" for i in range(len(config.hidden))), HEAD]


def resolve_freeze(config: MLPConfig, names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Expand aliases and check every name; `none` (alone) or nothing freezes nothing."""
    names = [n.strip() for n in names if n.strip()]
    if names == [NONE] or not names:
        return ()
    layers = layer_names(config)
    body = [n for n in layers if n.startswith("body.")]
    aliases = {"body": body, "trunk": [STANDARDIZER, *body]}
    unknown = [n for n in names if n not in layers and n not in aliases]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; this network's layers are "
                         f"{', '.join(layers)} (aliases: body, trunk; or {NONE})")
    chosen = {m for n in names for m in aliases.get(n, [n])}
    return tuple(n for n in layers if n in chosen)


def freeze_layers(model: MLP, layers: tuple[str, ...]) -> None:
    """Stop gradients to the named layers' parameters (the standardiser has none: the learner
    stops updating its statistics instead)."""
    modules = dict(model.named_modules())
    for name in layers:
        if name != STANDARDIZER:
            modules[name].requires_grad_(False)


def read_checkpoint(blob: bytes) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file: Mnemo's own (export, version blobs) have
    their checksum verified; a plain safetensors file written elsewhere is taken without one."""
    if has_checksum(blob):
        return tensors_from_bytes(blob)
    try:
        return st_load(bytes(blob)), {}
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"not a safetensors file: {e}") from e


def _head_labels(md: dict[str, str], rows: int, declared: Sequence[str]) -> list[str]:
    """The label of each of the checkpoint's head rows: from its metadata (Mnemo's blobs say),
    else the declared labels in order."""
    if LABELS_KEY in md:
        try:
            labels = [str(v) for v in json.loads(md[LABELS_KEY])]
        except (json.JSONDecodeError, TypeError) as e:
            raise CheckpointError(f"unreadable labels metadata: {e}") from e
        if len(labels) != rows:
            raise CheckpointError(f"its head has {rows} rows but its metadata lists "
                                  f"{len(labels)} labels")
        return labels
    if rows > len(declared):
        raise CheckpointError(f"its head has {rows} classes and no label names, but only "
                              f"{len(declared)} labels are declared: declare its labels "
                              "(MNEMO_LABELS) in its class order")
    return list(declared[:rows])


def model_from_checkpoint(blob: bytes, config: MLPConfig, labels: Sequence[str],
                          seed: int = 0) -> MLP:
    """A network of `config` over `labels` (config.num_classes of them) holding the
    checkpoint's trunk (standardiser and hidden layers) and, for each label the checkpoint
    also knows, that label's head row; the other rows start as a grown head's would.
    Declaring none of its labels transfers the trunk alone. Raises CheckpointError naming the
    first tensor that does not fit this config."""
    if len(labels) != config.num_classes:
        raise ValueError(f"{len(labels)} labels for {config.num_classes} classes")
    tensors, md = read_checkpoint(blob)
    model = build_model(config, seed=seed)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"it does not hold this network's tensors (missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]})")
    rows = tensors[f"{HEAD}.weight"].shape[0]
    for name, want in expected.items():
        got = tensors[name]
        shape = (rows, *want.shape[1:]) if name.startswith(f"{HEAD}.") else want.shape
        if got.shape != shape:
            raise CheckpointError(
                f"{name} has shape {tuple(got.shape)} there but {tuple(shape)} here "
                f"(input_dim {config.input_dim}, hidden {list(config.hidden)})")
        if not (got.is_floating_point() and torch.isfinite(got).all()):
            raise CheckpointError(f"{name} is not a finite floating-point tensor")
    where = {label: i for i, label in enumerate(_head_labels(md, rows, labels))}
    keep = [(i, where[label]) for i, label in enumerate(labels) if label in where]
    head = {f"{HEAD}.weight": expected[f"{HEAD}.weight"].clone(),
            f"{HEAD}.bias": expected[f"{HEAD}.bias"].clone()}
    for key, t in head.items():
        for i, j in keep:
            t[i] = tensors[key][j]
    if keep:  # as GrowableHead.grow: an unseen class starts below every known one
        fresh = [i for i in range(len(labels)) if i not in {i for i, _ in keep}]
        head[f"{HEAD}.bias"][fresh] = min(float(tensors[f"{HEAD}.bias"][j]) for _, j in keep)
    model.load_state_dict({**tensors, **head}, strict=True)
    return model
