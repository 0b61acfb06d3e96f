"""Per-sample gradient statistics (torch.func: one vmapped pass per chunk): the diagonal Fisher
of EWC and the output sensitivity of MAS are both a mean over samples of a per-sample gradient
mapped elementwise."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def per_sample_grad_mean(model: nn.Module, params: dict[str, Tensor],
                         sample_loss: Callable[..., Tensor], data: tuple[Tensor, ...],
                         elementwise: Callable[[Tensor], Tensor],
                         chunk_size: int = 256) -> dict[str, Tensor]:
    """Mean over samples i of elementwise(∂ sample_loss(model(x_i), *rest_i) / ∂θ).

    data = (x, *rest); sample_loss gets the (1, C) logits of one sample and that sample's
    entries of rest. Chunking bounds memory at chunk_size x (number of parameters) floats.
    """
    x = data[0]
    if x.shape[0] == 0:
        raise ValueError("cannot estimate per-sample statistics from zero samples")
    detached = {k: p.detach() for k, p in params.items()}

    def loss(p: dict[str, Tensor], xi: Tensor, *rest: Tensor) -> Tensor:
        return sample_loss(functional_call(model, p, (xi.unsqueeze(0),)), *rest)

    per_sample_grads = vmap(grad(loss), in_dims=(None, *[0] * len(data)))
    total = {k: torch.zeros_like(p) for k, p in detached.items()}
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk_size):
            g = per_sample_grads(detached, *(t[start : start + chunk_size] for t in data))
            for k in total:
                total[k] += elementwise(g[k]).sum(0)
    return {k: t / x.shape[0] for k, t in total.items()}


def _cross_entropy(logits: Tensor, yi: Tensor) -> Tensor:
    return F.cross_entropy(logits, yi.unsqueeze(0))


def diagonal_fisher(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor,
                    chunk_size: int = 256) -> dict[str, Tensor]:
    """Mean over samples of the squared per-sample gradient of CE(model(x_i), y_i).

    Uses the labels given (the empirical Fisher).
    """
    return per_sample_grad_mean(model, params, _cross_entropy, (x, y), torch.square, chunk_size)
