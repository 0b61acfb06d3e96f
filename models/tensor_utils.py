"""Small tensor helpers shared by the network, the strategies and the learner."""

from __future__ import annotations

import torch
from torch import Tensor


def grow_zeros(t: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Return `t` zero-padded at the end of each dimension up to `shape`.

    Used wherever per-parameter state (Fisher, anchors, optimizer moments) must follow a
    parameter that grew: the old entries keep their exact values, the new ones are zero.
    """
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    if len(shape) != t.dim() or any(n < o for n, o in zip(shape, t.shape, strict=True)):
        raise ValueError(f"cannot grow a tensor of shape {tuple(t.shape)} to {shape}")
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out
