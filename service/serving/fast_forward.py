"""The served plain MLP's forward pass without nn.Module calls.

A 1-row predict_proba through the default 64→128→128→10 MLP: 92-105 µs through `module(x)`
against 71-74 µs with the trunk run by models.nets.run_trunk (the learner's training path
too), the standardiser's buffers taken once and the head called without its module call
(/tmp A/B in one script on the 2-core dev machine). The ops, their order and their tensors
are the module's own, so the logits are bit-identical; load_served also checks that on a
probe batch and keeps the module's forward if not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_globals

from models.nets import MLP, run_trunk, standardize

Forward = Callable[[Tensor], Tensor]


def _has_hooks(module: nn.Module) -> bool:
    global_hooks = (module_globals._global_forward_hooks, module_globals._global_forward_pre_hooks)
    return any(global_hooks) or any(m._forward_hooks or m._forward_pre_hooks
                                    for m in module.modules())


def plain_forward(module: nn.Module) -> Forward | None:
    """A function computing `module(x)` with the same ops, for a plain MLP (exactly that
    class: per-tag heads and progressive columns route by tag) without hooks; else None.
    For serving only: the module must not change afterwards (a published snapshot)."""
    if type(module) is not MLP or _has_hooks(module):
        return None
    st, body = module.standardizer, module.body
    buffers = (st.shift, st.scale, st.lo, st.hi)
    head = module.head.forward  # its block padding stays in one place; one call, no hooks

    def forward(x: Tensor) -> Tensor:
        return head(run_trunk(body, standardize(x, *buffers)))

    return forward


def checked_forward(module: nn.Module, probe: Tensor) -> Forward | None:
    """plain_forward, kept only if it gives exactly the module's logits on `probe`."""
    fast = plain_forward(module)
    if fast is None:
        return None
    with torch.inference_mode():
        return fast if torch.equal(fast(probe), module(probe)) else None
