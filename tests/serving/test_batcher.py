"""The micro-batcher against the real Redis: callers get their own rows, a failure reaches every
caller of the pass, an idle request never waits, in-flight passes finish on their version."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import httpx
import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from torch import nn

from models.learner import IncrementalLearner
from models.nets import MLPConfig, build_model
from models.strategies import make_strategy
from service.config import Settings
from service.monitor.api_metrics import ApiMetrics
from service.serving.batcher import MicroBatcher
from service.serving.holder import ModelHolder, ServedModel
from service.serving.tag_heads import predict_for_tag
from service.store.codec import vector_from_bytes
from service.store.keys import Keys
from service.store.predictions import PredictionLog, read_drift_samples
from tests.conftest import REDIS_URL, free_port, running_app

LABELS: list[str | int] = ["a", "b", "c"]


def served(version: int, module: nn.Module | None = None) -> ServedModel:
    module = module or build_model(MLPConfig(4, (16,), 3), seed=version).eval()
    return ServedModel(version, version, LABELS, module)


class Held(nn.Module):
    """Wraps a model; its forward pass blocks until released (runs in the batcher's thread)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.release.wait(60)
        return self.inner(x)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward exploded")


@pytest.fixture
async def parts(model_name: str) -> AsyncIterator[tuple[Redis, PredictionLog, ApiMetrics]]:
    redis = Redis.from_url(REDIS_URL)
    metrics = ApiMetrics(CollectorRegistry(), model_name)
    yield redis, PredictionLog(redis, Keys(model_name), 4, 600), metrics
    await redis.aclose()


def batch_sizes(metrics: ApiMetrics, model: str) -> tuple[float, float]:
    """(passes observed, rows observed) by mnemo_predict_batch_size."""
    get = metrics.registry.get_sample_value
    labels = {"model": model}
    return (get("mnemo_predict_batch_size_count", labels) or 0.0,
            get("mnemo_predict_batch_size_sum", labels) or 0.0)


def held_pass(predictions: PredictionLog, metrics: ApiMetrics,
              ) -> tuple[ServedModel, ModelHolder, MicroBatcher]:
    """Version 1 whose forward pass blocks until released; thread_min_work=0: every pass
    leaves the event loop, so arrivals are handled while one is held."""
    held = served(1, Held(build_model(MLPConfig(4, (16,), 3), seed=1).eval()))
    holder = ModelHolder()
    holder.swap(held)
    return held, holder, MicroBatcher(holder, predictions, metrics, max_rows=64,
                                      max_wait_seconds=0.0, thread_min_work=0)


def expected(model: ServedModel, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model.module(torch.from_numpy(x)), dim=1).numpy()


async def test_concurrent_callers_get_their_own_rows_from_one_pass(parts, model_name) -> None:
    _, predictions, metrics = parts
    holder = ModelHolder()
    holder.swap(served(1))
    batcher = MicroBatcher(holder, predictions, metrics, max_rows=64, max_wait_seconds=0.0)
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32)
                for _ in range(12)]
    tags = ["even" if i % 2 == 0 else "" for i in range(12)]
    answers = await asyncio.gather(*(batcher.predict(x, tag, None)
                                     for x, tag in zip(requests, tags, strict=True)))

    total = sum(len(x) for x in requests)
    assert batcher.counters.passes == 1
    assert batch_sizes(metrics, model_name) == (1.0, float(total))
    for x, tag, answer in zip(requests, tags, answers, strict=True):
        alone = expected(holder.served, x)  # type: ignore[arg-type]
        np.testing.assert_allclose(answer.probabilities, alone, rtol=1e-5, atol=1e-6)
        assert answer.best.tolist() == alone.argmax(axis=1).tolist()
        assert answer.served.version == 1 and answer.logged
        # Every server id resolves to its own row, version and tag.
        logged = await predictions.resolve(answer.ids)
        for row, entry in enumerate(logged):
            assert entry is not None
            np.testing.assert_array_equal(vector_from_bytes(entry.stored), x[row])
            assert (entry.version, entry.tag) == (1, tag)
    all_ids = [i for a in answers for i in a.ids]
    assert len(set(all_ids)) == total
    # Requests with one tag share one key: two tags, two keys.
    assert len({i.split("-")[0] for i in all_ids}) == 2


async def test_client_ids_are_kept_and_resolvable(parts) -> None:
    _, predictions, metrics = parts
    holder = ModelHolder()
    holder.swap(served(1))
    batcher = MicroBatcher(holder, predictions, metrics, max_rows=64, max_wait_seconds=0.0)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    answer = await batcher.predict(x, "t", ["mine-1", "mine-2"])
    assert answer.ids == ["mine-1", "mine-2"]
    logged = await predictions.resolve(["mine-1", "mine-2"])
    assert [vector_from_bytes(e.stored).tolist() for e in logged if e] == x.tolist()


async def test_forward_failure_reaches_every_caller_and_the_next_pass_recovers(parts) -> None:
    _, predictions, metrics = parts
    holder = ModelHolder()
    holder.swap(served(1, Broken()))
    batcher = MicroBatcher(holder, predictions, metrics, max_rows=64, max_wait_seconds=0.0)
    x = np.zeros((1, 4), np.float32)
    results = await asyncio.gather(*(batcher.predict(x, "", None) for _ in range(5)),
                                   return_exceptions=True)
    assert batcher.counters.passes == 1
    assert all(isinstance(r, RuntimeError) and "forward exploded" in str(r) for r in results)
    holder.swap(served(2))
    assert (await batcher.predict(x, "", None)).served.version == 2


async def test_idle_requests_never_wait_for_the_max_wait(parts, model_name) -> None:
    _, predictions, metrics = parts
    holder = ModelHolder()
    holder.swap(served(1))
    # A max wait of an hour: any wait while idle would be counted (and hang the test).
    batcher = MicroBatcher(holder, predictions, metrics, max_rows=64, max_wait_seconds=3600)
    for _ in range(5):
        await batcher.predict(np.ones((2, 4), np.float32), "", None)
    assert batcher.counters.passes == 5
    assert batcher.counters.waits == 0
    assert batch_sizes(metrics, model_name) == (5.0, 10.0)


async def test_arrivals_during_a_pass_join_the_next_and_finish_on_its_version(
        parts, model_name) -> None:
    _, predictions, metrics = parts
    old, holder, batcher = held_pass(predictions, metrics)
    x = np.ones((3, 4), np.float32)
    first = asyncio.create_task(batcher.predict(x, "", None))
    assert await asyncio.to_thread(old.module.entered.wait, 60)
    holder.swap(served(2))  # a new version arrives while the old one's pass is in flight
    later = [asyncio.create_task(batcher.predict(x, "", None)) for _ in range(4)]
    await asyncio.sleep(0.05)  # let them queue behind the held pass
    old.module.release.set()
    answer = await first
    assert answer.served.version == 1
    np.testing.assert_allclose(answer.probabilities, expected(old, x), rtol=1e-5, atol=1e-6)
    later_answers = await asyncio.gather(*later)
    assert {a.served.version for a in later_answers} == {2}
    assert batcher.counters.passes == 2
    assert batcher.counters.threaded == 2
    assert batch_sizes(metrics, model_name) == (2.0, 15.0)


async def test_a_pass_takes_whole_requests_up_to_max_rows(parts, model_name) -> None:
    _, predictions, metrics = parts
    held, _, batcher = held_pass(predictions, metrics)
    first = asyncio.create_task(batcher.predict(np.ones((1, 4), np.float32), "", None))
    assert await asyncio.to_thread(held.module.entered.wait, 60)
    queued = [asyncio.create_task(batcher.predict(np.ones((30, 4), np.float32), "", None))
              for _ in range(3)]
    await asyncio.sleep(0.05)
    held.module.release.set()
    await asyncio.gather(first, *queued)
    # 1 row, then 30+30 (a third 30 would pass 64), then 30.
    assert batcher.counters.passes == 3
    assert batch_sizes(metrics, model_name) == (3.0, 91.0)


async def test_redis_down_answers_every_caller_unlogged(model_name) -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    metrics = ApiMetrics(CollectorRegistry(), model_name)
    holder = ModelHolder()
    holder.swap(served(1))
    batcher = MicroBatcher(holder, PredictionLog(redis, Keys(model_name), 4, 600), metrics,
                           max_rows=64, max_wait_seconds=0.0)
    answers = await asyncio.gather(*(batcher.predict(np.ones((1, 4), np.float32), "", None)
                                     for _ in range(3)))
    assert [a.logged for a in answers] == [False, False, False]
    assert all(len(a.ids) == 1 for a in answers)
    await redis.aclose()


async def test_concurrent_http_predicts_match_the_model_row_by_row(
        make_settings: Callable[..., Settings], model_name: str) -> None:
    async with running_app(make_settings()) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        rng = np.random.default_rng(1)
        bodies = [rng.normal(size=(int(rng.integers(1, 4)), 4)).round(3).tolist()
                  for _ in range(10)]

        async def call(rows: list[list[float]]) -> httpx.Response:
            return await client.post("/v1/predict", json={"inputs": rows})

        responses = await asyncio.gather(*(call(rows) for rows in bodies))
        model = ctx.holder.served
        for rows, response in zip(bodies, responses, strict=True):
            assert response.status_code == 200, response.text
            got = np.array([p["probabilities"] for p in response.json()["predictions"]])
            np.testing.assert_allclose(got, expected(model, np.array(rows, np.float32)),
                                       rtol=1e-5, atol=1e-6)
        passes, rows_seen = batch_sizes(ctx.metrics, model_name)
        assert rows_seen == sum(len(rows) for rows in bodies)
        assert passes == ctx.batcher.counters.passes


async def test_a_pass_routes_each_request_to_its_tags_head(parts, model_name) -> None:
    """MNEMO_HEADS=per-tag: requests of different tags share a pass, yet each answers from its
    own head over that head's labels (the default head for an absent or unknown tag), and the
    drift sample records global class indices."""
    redis, predictions, metrics = parts
    learner = IncrementalLearner(MLPConfig(4, (16,), 4, ()), make_strategy("naive"), seed=0)
    x_fit = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    tags_fit = ["sign-0", "sign-1"] * 32
    y_fit = torch.tensor([(0 if i % 2 == 0 else 2) + int(r[i % 2] > 0)
                          for i, r in enumerate(x_fit)])
    learner.ensure_tags(tags_fit, y_fit, max_tags=10)
    learner.learn_many(x_fit, y_fit, None, tags_fit)
    labels: list[str | int] = ["neg0", "pos0", "neg1", "pos1"]
    model = ServedModel(1, 1, labels, learner.model.eval())
    holder = ModelHolder()
    holder.swap(model)
    batcher = MicroBatcher(holder, predictions, metrics, max_rows=64, max_wait_seconds=0.0,
                           routes_by_tag=True)
    rng = np.random.default_rng(1)
    tags = ["sign-0", "sign-1", "", "elsewhere", "sign-1", "sign-0"]
    requests = [rng.normal(size=(3, 4)).astype(np.float32) for _ in tags]
    answers = await asyncio.gather(*(batcher.predict(x, tag, None)
                                     for x, tag in zip(requests, tags, strict=True)))
    assert batcher.counters.passes == 1
    head_labels = {"sign-0": ["neg0", "pos0"], "sign-1": ["neg1", "pos1"]}
    for x, tag, answer in zip(requests, tags, answers, strict=True):
        alone, alone_labels, _ = predict_for_tag(model, x, tag or None, True)
        assert answer.labels == alone_labels  # a head's classes in the order it met them
        assert set(answer.labels) == set(head_labels.get(tag, labels))
        np.testing.assert_allclose(answer.probabilities, alone, rtol=1e-5, atol=1e-6)
        assert answer.best.tolist() == alone.argmax(axis=1).tolist()
    sampled = await read_drift_samples(redis, Keys(model_name), 4, "0", 600)
    by_row = {tuple(r): int(c) for r, c in zip(sampled.x.tolist(), sampled.predicted.tolist(),
                                                 strict=True)}
    for x, answer in zip(requests, answers, strict=True):
        for row, best in zip(x.tolist(), answer.best.tolist(), strict=True):
            if tuple(row) in by_row:  # the global index of the label answered
                assert labels[by_row[tuple(row)]] == answer.labels[best]
    assert by_row, "no drift samples written"


class GatedLog(PredictionLog):
    """The real prediction log whose first write waits for a gate: passes that finish while
    it is out must go together in the next write."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.writes: list[int] = []  # groups per write

    async def write(self, plan, groups, predicted) -> None:  # type: ignore[no-untyped-def]
        self.writes.append(len(groups))
        if len(self.writes) == 1:
            await self.gate.wait()
        await super().write(plan, groups, predicted)


async def test_passes_finished_during_a_write_share_the_next_one(parts, model_name) -> None:
    redis, _, metrics = parts
    log = GatedLog(redis, Keys(model_name), 4, 600)
    holder = ModelHolder()
    holder.swap(served(1))
    batcher = MicroBatcher(holder, log, metrics, max_rows=64, max_wait_seconds=0.0)
    rng = np.random.default_rng(3)
    first = asyncio.create_task(batcher.predict(rng.normal(size=(1, 4)).astype(np.float32),
                                                "", None))
    while not log.writes:  # pass 1 ran; its write is out, held at the gate
        await asyncio.sleep(0)
    holder.swap(served(2))  # later passes answer from another version, logged as such
    later = []
    for tag in ("", "t", ""):  # three more passes, one at a time, while the write is out
        x = rng.normal(size=(2, 4)).astype(np.float32)
        later.append((x, asyncio.create_task(batcher.predict(x, tag, ["cid-" + tag + str(len(later))]))))
        while batcher.counters.passes < len(later) + 1:
            await asyncio.sleep(0)
    assert not first.done() and not any(task.done() for _, task in later)
    log.gate.set()
    answers = [await first] + [await task for _, task in later]
    assert batcher.counters.passes == 4 and batcher.counters.log_writes == 2
    assert log.writes == [1, 3]  # the three later passes in one write
    assert all(a.logged for a in answers)
    for (x, _), answer in zip(later, answers[1:], strict=True):
        (found,) = await log.resolve(answer.ids[:1])
        assert found is not None and found.version == 2
        np.testing.assert_array_equal(vector_from_bytes(found.stored), x[0])
    (found,) = await log.resolve(answers[0].ids)
    assert found is not None and found.version == 1
