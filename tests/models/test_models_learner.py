import pytest
import torch

from models.checkpoint import tensors_from_bytes, tensors_to_bytes
from models.learner import IncrementalLearner, StepStats
from models.nets import MLPConfig
from models.replay import ReservoirBuffer
from models.strategies import StrategyBase, make_strategy

CONFIG = MLPConfig(input_dim=6, hidden=(16, 8), num_classes=3)


def stream(seed: int, n: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    x = torch.randn(n, 6, generator=g) + 4 * torch.nn.functional.one_hot(y, 6).float()
    return x * 10 + 5, y  # unscaled on purpose: the standardiser must cope


def fill(buffer: ReservoirBuffer, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for xi, yi in zip(x, y, strict=True):
        buffer.insert(xi, int(yi), float(torch.rand((), generator=g)))


def trained_learner(device: str = "cpu") -> tuple[IncrementalLearner, ReservoirBuffer]:
    learner = IncrementalLearner(CONFIG, make_strategy("online-ewc", lam=50.0), seed=1,
                                 replay_size=8, steps_per_batch=2, device=device)
    buf = ReservoirBuffer(40, 6)
    for i in range(6):
        x, y = stream(i, 16, 3)
        fill(buf, x, y, seed=100 + i)
        learner.learn_many(x, y, buf)
    learner.consolidate(*buf.items())
    x, y = stream(99, 16, 3)
    learner.learn_many(x, y, buf)
    return learner, buf


def snapshot_state(learner: IncrementalLearner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.state_dict().items()}


def test_learn_many_reports_stats_and_reduces_loss() -> None:
    learner = IncrementalLearner(CONFIG, make_strategy("naive"), seed=0, steps_per_batch=3)
    x, y = stream(0, 64, 3)
    first = learner.learn_many(x, y)
    assert isinstance(first, StepStats)
    assert (first.samples, first.steps, first.penalty) == (64, 3, 0.0)
    for _ in range(39):
        last = learner.learn_many(x, y)
    assert last.loss < first.loss / 3
    assert learner.samples_seen == 40 * 64 and learner.steps_done == 120
    # The standardiser counts each learn_many's new rows once (not once per step).
    assert learner.model.standardizer.count.item() == 40 * 64


def test_penalty_is_reported_after_consolidation() -> None:
    learner, buf = trained_learner()
    stats = learner.learn_many(*stream(7, 16, 3), buf)
    assert stats.penalty > 0
    assert stats.penalty == pytest.approx(learner.strategy.penalty(learner.model).item())


def test_labels_outside_the_head_are_refused() -> None:
    learner = IncrementalLearner(CONFIG, make_strategy("naive"))
    with pytest.raises(ValueError, match="ensure_classes"):
        learner.learn_many(torch.zeros(2, 6), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="expected x"):
        learner.learn_many(torch.zeros(2, 5), torch.tensor([0, 1]))


def test_predict_proba_is_a_cpu_float32_distribution() -> None:
    learner, _ = trained_learner()
    p = learner.predict_proba(stream(3, 10, 3)[0].double())
    assert p.dtype == torch.float32 and p.device.type == "cpu" and p.shape == (10, 3)
    torch.testing.assert_close(p.sum(1), torch.ones(10))
    empty = IncrementalLearner(MLPConfig(6, (4,), 0), make_strategy("naive"))
    assert empty.predict_proba(torch.zeros(2, 6)).shape == (2, 0)


def test_ensure_classes_extends_model_optimizer_and_strategy_keeping_old_rows() -> None:
    learner, buf = trained_learner()
    x = stream(5, 20, 3)[0]
    before_out = learner.model(x).detach()
    before = snapshot_state(learner)
    old_params = list(learner.model.parameters())
    learner.ensure_classes(5)
    after = learner.state_dict()
    assert learner.num_classes == 5 and learner.config.num_classes == 5
    assert torch.equal(learner.model(x).detach()[:, :3], before_out)
    grown = {k for k in after if after[k].shape != before[k].shape}
    assert grown == {f"{pre}head.{w}{post}" for w in ("weight", "bias") for pre, post in [
        ("model.", ""), ("strategy.fisher.", ""), ("strategy.anchor.", ""),
        ("optim.", ".exp_avg"), ("optim.", ".exp_avg_sq")]}
    for k, old in before.items():
        new = after[k]
        if k == "rng":
            continue  # growth draws the new rows' weights from the learner's generator
        old_part = new[tuple(slice(0, n) for n in old.shape)]
        assert torch.equal(old_part, old), k
        if k in grown and not k.startswith("model."):
            assert torch.count_nonzero(new[3:]) == 0, k  # zeros for the new rows
    assert torch.count_nonzero(after["optim.head.weight.exp_avg"][:3]) > 0
    # The optimizer now steps the new Parameter objects, not the replaced ones.
    opt_params = learner.optimizer.param_groups[0]["params"]
    assert all(p is q for p, q in zip(opt_params, learner.model.parameters(), strict=True))
    assert all(learner.model.head.weight is not q for q in old_params)
    x4, y4 = stream(6, 16, 5)
    stats = learner.learn_many(x4, y4, buf)
    assert stats.loss == stats.loss  # finite, not NaN
    learner.ensure_classes(4)  # never shrinks
    assert learner.num_classes == 5


def test_restored_learner_predicts_and_steps_identically() -> None:
    a, buf_a = trained_learner()
    a.ensure_classes(4)
    blob = tensors_to_bytes(a.state_dict(), a.meta())
    state, meta = tensors_from_bytes(blob)
    # Rebuilt from the original 3-class config: the state itself says the head has 4 rows.
    b = IncrementalLearner.from_state(CONFIG, make_strategy(meta["strategy"], lam=50.0), state,
                                      meta=meta)
    assert (b.lr, b.replay_size, b.steps_per_batch, b.seed) == (a.lr, 8, 2, 1)
    x = stream(11, 30, 3)[0]
    assert torch.equal(a.predict_proba(x), b.predict_proba(x))
    buf_b = ReservoirBuffer(buf_a.capacity, 6)
    for slot, (xi, yi) in enumerate(zip(*buf_a.items(), strict=True)):
        buf_b.put(slot, xi, int(yi))
    for i in range(3):
        xs, ys = stream(20 + i, 16, 4)
        assert a.learn_many(xs, ys, buf_a) == b.learn_many(xs, ys, buf_b)
    assert a.consolidate(*buf_a.items()) >= 0 and b.consolidate(*buf_b.items()) >= 0
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_state_dict_is_a_detached_copy() -> None:
    learner, buf = trained_learner()
    state = learner.state_dict()
    frozen = {k: v.clone() for k, v in state.items()}
    learner.learn_many(*stream(8, 16, 3), buf)
    assert all(torch.equal(state[k], frozen[k]) for k in state)
    with pytest.raises(ValueError, match="not a learner state"):
        learner.load_state_dict({"bogus": torch.zeros(1)})


def test_snapshot_is_an_independent_eval_copy() -> None:
    learner, buf = trained_learner()
    snap = learner.snapshot()
    x = stream(9, 8, 3)[0]
    out = snap(x)
    assert not snap.training and not out.requires_grad
    learner.learn_many(*stream(10, 16, 3), buf)
    assert torch.equal(snap(x), out)
    assert not torch.equal(learner.model(x).detach(), out)


@pytest.mark.cuda
def test_cuda_learner_matches_the_cpu_contract() -> None:
    gpu, buf = trained_learner("cuda")
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    gpu.ensure_classes(4)
    gpu.learn_many(*stream(12, 16, 4), buf)
    assert gpu.consolidate(*buf.items()) > 0
    state = gpu.state_dict()
    assert all(v.device.type == "cpu" for v in state.values())
    cpu = IncrementalLearner.from_state(CONFIG, make_strategy("online-ewc", lam=50.0), state,
                                        meta=gpu.meta())
    x = stream(13, 32, 4)[0]
    torch.testing.assert_close(gpu.predict_proba(x), cpu.predict_proba(x), rtol=1e-4,
                               atol=1e-5)
    assert next(gpu.snapshot().parameters()).device.type == "cpu"


class Recording(StrategyBase):
    """Records the hooks in call order; its loss term puts a large, known gradient on the bias."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.published: list[torch.nn.Module] = []

    def before_step(self, model: torch.nn.Module) -> None:
        self.calls.append("before_step")

    def loss_term(self, model: torch.nn.Module, x: torch.Tensor,
                  logits: torch.Tensor) -> torch.Tensor | None:
        self.calls.append("loss_term")
        assert logits.shape == (x.shape[0], 3) and logits.requires_grad
        return 1000.0 * model.head.bias.sum()

    def apply_to_grads(self, model: torch.nn.Module) -> None:
        self.calls.append("apply_to_grads")
        # backward ran, through the loss term: CE alone keeps each bias gradient within [-1, 1].
        assert torch.all(model.head.bias.grad > 990)

    def after_step(self, model: torch.nn.Module) -> None:
        self.calls.append("after_step")

    def on_publish(self, model: torch.nn.Module) -> None:
        self.published.append(model)


def test_learn_many_calls_the_strategy_hooks_in_order() -> None:
    strategy = Recording()
    learner = IncrementalLearner(CONFIG, strategy, seed=0, steps_per_batch=2, lr=1e-6)
    buf = ReservoirBuffer(10, 6)
    fill(buf, *stream(0, 10, 3), seed=0)
    stats = learner.learn_many(*stream(1, 8, 3), buf)
    assert strategy.calls == ["before_step", "loss_term", "apply_to_grads", "after_step"] * 2
    # The reported penalty includes the mean loss term (1000 · Σ bias, about constant here).
    assert stats.penalty == pytest.approx(1000 * learner.model.head.bias.sum().item(), rel=1e-3)
    learner.on_publish()
    assert strategy.published == [learner.model]
    learner.relax(0.25)
    assert strategy.scale == 0.25


def test_a_relaxed_penalty_is_restored_relaxed() -> None:
    learner, _ = trained_learner()
    full = learner.strategy.penalty(learner.model).item()
    learner.relax(0.5)
    b = IncrementalLearner.from_state(CONFIG, make_strategy("online-ewc", lam=50.0),
                                      learner.state_dict(), meta=learner.meta())
    assert b.strategy.penalty(b.model).item() == pytest.approx(full / 2, rel=1e-6)


def test_learning_without_a_report_trains_identically_and_reports_nan() -> None:
    """report=False only skips evaluating loss and penalty: the same steps, the same state."""
    a, buf_a = trained_learner()
    b, buf_b = trained_learner()
    for i in range(3):
        xs, ys = stream(30 + i, 16, 3)
        reported = a.learn_many(xs, ys, buf_a)
        quiet = b.learn_many(xs, ys, buf_b, report=False)
        assert (quiet.samples, quiet.steps) == (reported.samples, reported.steps) == (16, 2)
        assert quiet.loss != quiet.loss and quiet.penalty != quiet.penalty  # NaN
        assert reported.penalty > 0
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_logits_are_the_models_up_to_rounding() -> None:
    from models.learner import _training_logits
    from models.nets import build_model

    learner, _ = trained_learner()
    learner.ensure_classes(70)  # past one 64-row padding block
    x = stream(40, 20, 3)[0]
    torch.testing.assert_close(_training_logits(learner.model, x), learner.model(x))
    heads = build_model(MLPConfig(6, (8,), 3, tag_heads=(("a", (0, 1)),)), seed=0)
    assert torch.equal(_training_logits(heads, x), heads(x))  # other models: their forward


def _reference_step_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The general code each shortcut in learn_many stands for: nn.Module calls for the trunk,
    Optimizer.step, the uncached aligned() walk, advanced indexing for replay rows."""
    import models.learner as learner_module
    from models.strategies.base import aligned
    from models.strategies.quadratic import QuadraticPenalty

    def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        head = model.head
        return torch.nn.functional.linear(model.features(x), head.weight, head.bias)

    def sample(self: ReservoirBuffer, n: int, generator: torch.Generator) -> tuple[
            torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self), (n,), generator=generator)
        return self._x[idx], self._y[idx]

    monkeypatch.setattr(learner_module, "_training_logits", logits)
    monkeypatch.setattr(IncrementalLearner, "_adam_step", lambda self: self._opt.step())
    monkeypatch.setattr(QuadraticPenalty, "_aligned_params",
                        lambda self, model: aligned(model, self.importance))
    monkeypatch.setattr(ReservoirBuffer, "sample", sample)


def _train_through_growth() -> tuple[dict[str, torch.Tensor], list[float]]:
    """learn_many with replay and online EWC across a consolidation, a relax and a head that
    grows (new Parameters, so every per-step cache must follow): its state and reports."""
    learner, buf = trained_learner()
    reports = []
    for i in range(8):
        if i == 4:
            learner.ensure_classes(5)
        x, y = stream(200 + i, 24, 5 if i >= 4 else 3)
        stats = learner.learn_many(x, y, buf)
        reports += [stats.loss, stats.penalty]
        if i == 2:
            learner.consolidate(*buf.items())
            learner.relax(0.5)
    return snapshot_state(learner), reports


def test_learn_many_shortcuts_train_bit_identically_to_the_general_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fast_state, fast_reports = _train_through_growth()
    _reference_step_path(monkeypatch)
    ref_state, ref_reports = _train_through_growth()
    assert fast_reports == ref_reports
    assert fast_state.keys() == ref_state.keys()
    for k in ref_state:
        assert torch.equal(fast_state[k], ref_state[k]), k


def test_adam_shortcut_defers_to_optimizer_step_when_it_does_not_apply() -> None:
    learner, buf = trained_learner()
    calls = []
    # A step hook must run, so the general path must be taken.
    handle = learner.optimizer.register_step_post_hook(lambda *_: calls.append(1))
    x, y = stream(7, 16, 3)
    learner.learn_many(x, y, buf)
    handle.remove()
    learner.learn_many(x, y, buf)
    assert len(calls) == learner.steps_per_batch
