"""IncrementalLearner(precision="bf16"): bf16 autocast around the step's forward and loss, with
float32 parameters, optimizer state, saved state and snapshots (CPU autocast here; the cuda test
runs the same on a GPU)."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import model_from_bytes, model_to_bytes, tensors_from_bytes, tensors_to_bytes
from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.replay import ReservoirBuffer
from models.strategies import StrategyBase, make_strategy

CONFIG = MLPConfig(input_dim=8, hidden=(32, 32), num_classes=4)


def blobs(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four Gaussian blobs, 3 standard deviations apart on their own axis: linearly separable
    up to ~0.1% overlap, unscaled on purpose (the standardiser must cope)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + 6 * torch.nn.functional.one_hot(y, 8).float()
    return x * 5 - 2, y


class DtypeProbe(StrategyBase):
    """Records the dtype of the logits each step's loss term sees; adds nothing."""

    name = "probe"

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def loss_term(self, model: torch.nn.Module, x: torch.Tensor,
                  logits: torch.Tensor) -> torch.Tensor | None:
        self.dtypes.append(logits.dtype)
        return None


def train(learner: IncrementalLearner, batches: int = 60) -> ReservoirBuffer:
    buffer = ReservoirBuffer(200, 8)
    for i in range(batches):
        x, y = blobs(i, 32)
        for j, (xi, yi) in enumerate(zip(x, y, strict=True)):
            buffer.put((i * 32 + j) % 200, xi, int(yi))
        learner.learn_many(x, y, buffer)
        if i % 20 == 19:
            learner.consolidate(*buffer.items())
    return buffer


def accuracy(learner: IncrementalLearner) -> float:
    x, y = blobs(1000, 2000)
    return (learner.predict_proba(x).argmax(1) == y).float().mean().item()


def float_dtypes(state: dict[str, torch.Tensor]) -> set[torch.dtype]:
    return {v.dtype for v in state.values() if v.is_floating_point()}


@pytest.mark.parametrize("strategy", ["online-ewc", "lwf", "si"])
def test_bf16_learns_a_separable_problem_and_keeps_float32_state(strategy: str) -> None:
    bf16 = IncrementalLearner(CONFIG, make_strategy(strategy), seed=0, precision="bf16")
    fp32 = IncrementalLearner(CONFIG, make_strategy(strategy), seed=0)
    for learner in (bf16, fp32):
        learner.on_publish()  # LwF: a teacher from the start, so its term runs in every step
        train(learner)
    acc = accuracy(bf16)
    assert acc >= 0.97, acc
    assert acc >= accuracy(fp32) - 0.01
    # Parameters, Adam's moments and every saved tensor: float32 as in fp32 (float64 where
    # fp32 has it: standardiser statistics, the relax scale), key for key.
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert {v.dtype for s in bf16.optimizer.state.values() for v in s.values()} == {torch.float32}
    state, reference = bf16.state_dict(), fp32.state_dict()
    assert {k: v.dtype for k, v in state.items()} == {k: v.dtype for k, v in reference.items()}
    assert torch.bfloat16 not in float_dtypes(state)
    # The two precisions trained differently (bf16 really was used), not into another place.
    assert not torch.equal(state["model.head.weight"], reference["model.head.weight"])


def test_bf16_runs_the_step_in_bfloat16_and_fp32_does_not() -> None:
    seen = {}
    for precision in ("fp32", "bf16"):
        probe = DtypeProbe()
        learner = IncrementalLearner(CONFIG, probe, seed=0, precision=precision)
        stats = learner.learn_many(*blobs(0, 32))
        assert isinstance(stats.loss, float) and stats.loss == stats.loss
        seen[precision] = set(probe.dtypes)
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}


def test_bf16_state_round_trips_and_publishes_float32_weights() -> None:
    a = IncrementalLearner(CONFIG, make_strategy("online-ewc"), seed=3, replay_size=16,
                           precision="bf16")
    buf_a = train(a, batches=20)
    state, meta = tensors_from_bytes(tensors_to_bytes(a.state_dict(), a.meta()))
    assert "precision" not in meta  # each start decides it, like the device
    b = IncrementalLearner.from_state(CONFIG, make_strategy("online-ewc"), state, meta,
                                      precision="bf16")
    assert b.precision == "bf16"
    x = blobs(7, 64)[0]
    assert torch.equal(a.predict_proba(x), b.predict_proba(x))
    buf_b = ReservoirBuffer(buf_a.capacity, 8)
    for slot, (xi, yi) in enumerate(zip(*buf_a.items(), strict=True)):
        buf_b.put(slot, xi, int(yi))
    for i in range(3):  # the same bf16 steps from the restored state (CPU: deterministic)
        assert a.learn_many(*blobs(50 + i, 32), buf_a) == b.learn_many(*blobs(50 + i, 32), buf_b)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # What gets published: a float32 CPU model, unchanged through the version blob.
    snap = a.snapshot()
    assert {p.dtype for p in snap.state_dict().values() if p.is_floating_point()} <= {
        torch.float32, torch.float64}
    assert all(p.dtype == torch.float32 for p in snap.parameters())
    served, _ = model_from_bytes(model_to_bytes(snap))
    assert all(p.dtype == torch.float32 for p in served.parameters())
    with torch.no_grad():
        out = served.eval()(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, snap(x))


def test_lwf_distils_in_float32_under_bf16_autocast() -> None:
    """LwF's softmaxes and KL are float32 on bf16 logits (CPU autocast would leave log_softmax
    in bfloat16): the term equals the float32 formula over the same bf16 logits."""
    learner = IncrementalLearner(CONFIG, make_strategy("lwf", alpha=1.0), seed=0)
    lwf, model = learner.strategy, learner.model
    learner.learn_many(*blobs(0, 64))
    learner.on_publish()
    learner.learn_many(*blobs(1, 64))  # the student has moved away from its teacher
    x = blobs(2, 256)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        term = lwf.loss_term(model, x, logits)
        with torch.no_grad():
            target = lwf.teacher(x)
    assert logits.dtype == target.dtype == torch.bfloat16 and term.dtype == torch.float32
    t = lwf.temperature
    log_p = torch.log_softmax(logits.float() / t, -1)
    log_q = torch.log_softmax(target.float() / t, -1)
    expected = t * t * (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    assert term.item() > 0
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=0.0)


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        IncrementalLearner(CONFIG, make_strategy("naive"), precision="fp16")


@pytest.mark.cuda
def test_bf16_learns_on_cuda_with_float32_state() -> None:
    assert torch.cuda.is_bf16_supported()
    probe = DtypeProbe()
    learner = IncrementalLearner(CONFIG, probe, seed=0, device="cuda", precision="bf16")
    learner.learn_many(*blobs(0, 32))
    assert set(probe.dtypes) == {torch.bfloat16}
    gpu = IncrementalLearner(CONFIG, make_strategy("online-ewc"), seed=0, device="cuda",
                             precision="bf16")
    train(gpu)
    acc = accuracy(gpu)
    assert acc >= 0.97, acc
    assert all(p.dtype == torch.float32 and p.is_cuda for p in gpu.model.parameters())
    state = gpu.state_dict()
    assert torch.bfloat16 not in float_dtypes(state)
    cpu = IncrementalLearner.from_state(CONFIG, make_strategy("online-ewc"), state, gpu.meta())
    x = blobs(9, 256)[0]
    torch.testing.assert_close(gpu.predict_proba(x), cpu.predict_proba(x), rtol=1e-4, atol=1e-5)
    assert all(p.dtype == torch.float32 for p in gpu.snapshot().parameters())
