"""Diagonal empirical Fisher from per-sample gradients (torch.func: one vmapped pass per chunk)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def diagonal_fisher(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor,
                    chunk_size: int = 256) -> dict[str, Tensor]:
    """Mean over samples of the squared per-sample gradient of CE(model(x_i), y_i).

    Uses the labels given (the empirical Fisher). Chunking bounds memory at
    chunk_size x (number of parameters) floats.
    """
    if x.shape[0] == 0:
        raise ValueError("cannot estimate a Fisher from zero samples")
    detached = {k: p.detach() for k, p in params.items()}

    def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(p) for k, p in detached.items()}
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk_size):
            g = per_sample_grads(detached, x[start : start + chunk_size],
                                 y[start : start + chunk_size])
            for k in total:
                total[k] += g[k].square().sum(0)
    return {k: t / x.shape[0] for k, t in total.items()}
