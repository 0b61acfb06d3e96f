"""One step of the learner's fused Adam without torch.optim's per-step Python (IncrementalLearner
calls it for every optimizer step; tests/models/test_models_learner.py checks it bit for bit
against Optimizer.step)."""

from __future__ import annotations

import torch
import torch.optim.optimizer as _optim_module
from torch import Tensor


def fused_adam_step(opt: torch.optim.Adam) -> None:
    """opt.step() for the learner's Adam: the same fused kernel on the same tensors, without
    the ~60 µs of Python around it per step (profiler context, hooks, dynamo guard,
    _init_group, grouping by device and dtype), a sixth of a learn_many at chunk 32. The
    general path runs whenever this one's assumptions do not hold: a parameter's first step
    (state not made yet), step hooks, or settings other than the learner's own
    (IncrementalLearner.__init__)."""
    group = opt.param_groups[0]
    # .get: older torch releases in the supported range lack some of these keys.
    if (len(opt.param_groups) != 1 or not group.get("fused") or group.get("amsgrad")
            or group.get("capturable") or group.get("differentiable")
            or group.get("maximize") or group.get("decoupled_weight_decay")
            or isinstance(group["lr"], Tensor)
            or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
            or _optim_module._global_optimizer_pre_hooks
            or _optim_module._global_optimizer_post_hooks):
        opt.step()
        return
    params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
    for p in group["params"]:
        if p.grad is None:
            continue
        state = opt.state.get(p)
        if not state or p.grad.is_sparse:
            opt.step()
            return
        params.append(p)
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    if not params or len({(p.device, p.dtype) for p in params}) != 1:
        opt.step()  # one device and dtype: the one group _fused_adam would make
        return
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                       lr=group["lr"], beta1=beta1, beta2=beta2,
                       weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=False, grad_scale=None, found_inf=None)
