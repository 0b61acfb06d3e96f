"""Per-sample gradient statistics (torch.func: one vmapped pass per chunk): the diagonal Fisher
of EWC and the output sensitivity of MAS are both a mean over samples of a per-sample gradient
mapped elementwise.

For a plain MLP the diagonal Fisher needs no per-sample gradients: an affine layer's
per-sample weight gradient is the outer product δᵢaᵢᵀ of the gradient at its output and its
input, so Σᵢ (δᵢaᵢᵀ)² = (δ²)ᵀ(a²) — one forward and one backward pass over the whole batch
(512 samples: ~3 ms against ~40 ms vmapped on this CPU; `python -m models.bench_fisher`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from models.nets import MLP


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
    if x.shape[0] and _affine_layers(model, params) is not None:
        return _mlp_fisher(model, params, x, y)  # type: ignore[arg-type]
    return per_sample_grad_mean(model, params, _cross_entropy, (x, y), torch.square, chunk_size)


def _affine_layers(model: nn.Module, params: dict[str, Tensor]) -> list[str] | None:
    """The parameter prefixes of a plain MLP's affine layers in order (body Linears, then the
    head), or None when the model is anything else (per-tag heads, progressive columns) or
    `params` holds a parameter outside them: those take the per-sample path."""
    if type(model) is not MLP or not all(isinstance(m, nn.Linear | nn.ReLU) for m in model.body):
        return None
    prefixes = [f"body.{i}" for i, m in enumerate(model.body) if isinstance(m, nn.Linear)]
    prefixes.append("head")
    owned = {f"{p}.{kind}" for p in prefixes for kind in ("weight", "bias")}
    return prefixes if set(params) <= owned else None


def _mlp_fisher(model: MLP, params: dict[str, Tensor], x: Tensor,
                y: Tensor) -> dict[str, Tensor]:
    """diagonal_fisher of a plain MLP from each affine layer's inputs and output gradients."""
    prefixes = _affine_layers(model, params)
    assert prefixes is not None
    with torch.enable_grad():
        # The gradient flows from the standardised input on, so frozen layers pass it along.
        h = model.standardizer(x).detach().requires_grad_()
        inputs, outputs = [], []
        for layer in model.body:
            if isinstance(layer, nn.Linear):
                inputs.append(h)
                h = layer(h)
                outputs.append(h)
            else:
                h = layer(h)
        inputs.append(h)
        outputs.append(model.head(h))
        # Summed, so row i of each output gradient is sample i's own gradient there.
        loss = F.cross_entropy(outputs[-1], y, reduction="sum")
        deltas = torch.autograd.grad(loss, outputs)
    out: dict[str, Tensor] = {}
    n = x.shape[0]
    with torch.no_grad():
        for prefix, a, delta in zip(prefixes, inputs, deltas, strict=True):
            d2 = delta.square()
            out[f"{prefix}.weight"] = d2.T @ a.square() / n
            out[f"{prefix}.bias"] = d2.sum(0) / n
    return {k: out[k] for k in params}
