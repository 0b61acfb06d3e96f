"""The learner's Prometheus metrics (docs/DESIGN.md §7) and per-tag accuracy/forgetting (§6), read
with registry.get_sample_value from a LearnerService driven one step at a time against the
real Redis (DB 11), and once scraped over HTTP from a real `python -m service learn`.

Data: 4-D Gaussian blobs. Tag "alpha": class c pushes dimension c up; tag "beta": class c
pushes dimension c down (another region); tag "gamma": alpha's inputs with the labels
rotated, which the served version then learns at alpha's expense (forgetting on alpha).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from models.gate import predict_classes
from models.learner import IncrementalLearner
from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.tag_accuracy import WINDOW
from service.store.codec import vector_to_bytes
from service.store.feedback import FeedbackRecord, FeedbackStore
from service.store.golden import GoldenSet
from service.store.keys import Keys
from service.store.scripts import Scripts
from service.store.stats import StatsStore
from service.worker.loop import LearnerService
from tests.conftest import REDIS_URL, free_port
from tests.worker.test_loop import LABELS, init_deployment

ROOT = Path(__file__).resolve().parents[2]


def domain(n: int, seed: int, sign: float = 1.0, rotate: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    x = rng.normal(0.0, 0.5, (n, 4)).astype(np.float32)
    x[np.arange(n), y] += 3.0 * sign
    return x, (y + rotate) % len(LABELS)


async def append(aredis: Redis, settings: Settings, x: np.ndarray, y: np.ndarray,
                 tags: list[str]) -> None:
    """Accepted tagged feedback, appended exactly as the API appends it."""
    store = FeedbackStore(aredis, Keys(settings.model_name), Scripts(aredis))
    records = [FeedbackRecord("", LABELS[int(c)], vector_to_bytes(row), tag, None)
               for row, c, tag in zip(x, y, tags, strict=True)]
    result = await store.append(records, max_lag=1_000_000, max_classes=100)
    assert result.accepted == len(records)


def metered(settings: Settings, aredis: Redis) -> tuple[LearnerService, CollectorRegistry]:
    registry = CollectorRegistry()
    return LearnerService(settings, aredis, LearnerMetrics(registry, settings.model_name)), registry


async def begin(service: LearnerService) -> None:
    assert await service.lease.try_acquire()
    await service.prepare()


async def drain(service: LearnerService) -> None:
    while await service.step(block_ms=10):
        pass


def value(registry: CollectorRegistry, name: str, settings: Settings, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"model": settings.model_name, **labels})


def assert_model_label_everywhere(registry: CollectorRegistry, model: str) -> None:
    samples = [s for family in registry.collect() for s in family.samples]
    assert samples and all(s.labels.get("model") == model for s in samples)


def holdout_accuracy(service: LearnerService, tag: str) -> float:
    """What the smoothing promises: the served version on the tag's latest WINDOW items."""
    items = [(x, y) for x, y, t in service.stream.holdout if t == tag][:WINDOW]
    x, y = np.stack([x for x, _ in items]), np.array([y for _, y in items])
    return float(np.mean(predict_classes(service.served, x) == y))


async def test_counters_gauges_and_per_tag_forgetting(
    settings_for: Callable[..., Settings], aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    learn_many = IncrementalLearner.learn_many

    def counting(self: IncrementalLearner, *args: Any, **kwargs: Any) -> Any:
        stats = learn_many(self, *args, **kwargs)
        steps.append(stats.steps)
        return stats

    rehearse = IncrementalLearner.rehearse

    def counting_rehearsal(self: IncrementalLearner, *args: Any, **kwargs: Any) -> int:
        done = rehearse(self, *args, **kwargs)
        steps.append(done)  # idle-time replay steps are optimizer steps too
        return done

    monkeypatch.setattr(IncrementalLearner, "learn_many", counting)
    monkeypatch.setattr(IncrementalLearner, "rehearse", counting_rehearsal)
    settings = settings_for(strategy="naive+replay", holdout_fraction=0.3, holdout_size=2000,
                            publish_every_samples=1, gate_tolerance=1.0)
    await init_deployment(settings, aredis)
    service, registry = metered(settings, aredis)
    await begin(service)
    stats_store = StatsStore(aredis, Keys(settings.model_name))

    (ax, ay), (bx, by) = domain(300, 1), domain(300, 2, sign=-1.0)
    order = np.random.default_rng(3).permutation(600)
    x, y = np.concatenate([ax, bx])[order], np.concatenate([ay, by])[order]
    tags = np.array(["alpha"] * 300 + ["beta"] * 300)[order].tolist()
    await append(aredis, settings, x, y, tags)
    await service.report()
    assert value(registry, "mnemo_feedback_lag_items", settings) == 600
    await drain(service)
    await service.report()
    snapshot = await stats_store.read()
    assert value(registry, "mnemo_feedback_lag_items", settings) == snapshot.lag == 0
    assert value(registry, "mnemo_reservoir_size", settings) == snapshot.reservoir > 0

    before = {tag: holdout_accuracy(service, tag) for tag in ("alpha", "beta")}
    assert min(before.values()) > 0.9, before
    for tag, acc in before.items():
        assert value(registry, "mnemo_accuracy", settings, tag=tag) == pytest.approx(acc)

    # A third domain takes alpha's inputs with other labels: alpha's holdout accuracy drops.
    gx, gy = domain(600, 4, rotate=1)
    await append(aredis, settings, gx, gy, ["gamma"] * 600)
    await drain(service)
    await service.report()
    stats = (await stats_store.read()).learner

    assert value(registry, "mnemo_learner_samples_total", settings) == 1200 == service.samples_seen
    assert value(registry, "mnemo_learner_steps_total", settings) == sum(steps) > 0
    published = value(registry, "mnemo_model_publish_total", settings, outcome="published")
    assert published == service.served_version >= 3  # at every step that read something
    assert value(registry, "mnemo_model_publish_total", settings, outcome="rejected") == 0
    assert value(registry, "mnemo_prequential_accuracy", settings) == stats["prequential_accuracy"]
    assert value(registry, "mnemo_balanced_accuracy", settings) == stats["balanced_accuracy"]
    assert value(registry, "mnemo_learner_loss", settings) == stats["loss"]
    assert value(registry, "mnemo_concept_drift_events_total", settings) == service.drift_events

    assert set(stats["tags"]) == {"alpha", "beta", "gamma"}
    for tag, entry in stats["tags"].items():
        acc = value(registry, "mnemo_accuracy", settings, tag=tag)
        forgetting = value(registry, "mnemo_forgetting", settings, tag=tag)
        assert acc == pytest.approx(entry["accuracy"], abs=1e-4)
        assert acc == pytest.approx(holdout_accuracy(service, tag))
        assert forgetting == pytest.approx(entry["forgetting"], abs=1e-4)
        assert forgetting >= 0
    alpha = stats["tags"]["alpha"]
    assert alpha["accuracy"] < before["alpha"] - 0.3, stats["tags"]
    assert alpha["forgetting"] == pytest.approx(service.tag_accuracy.best["alpha"] - alpha["accuracy"],
                                                abs=1e-4)
    assert alpha["forgetting"] > 0.3, stats["tags"]
    # The others keep what they knew: against alpha's > 0.3, under 0.1. Each tag's holdout is
    # ~90 items picked by a hash of the stream ids (new each run), so one item is ~0.011: a
    # full suite saw beta at 0.0506, five items, against a bound of 0.05 before.
    assert stats["tags"]["beta"]["forgetting"] < 0.1, stats["tags"]
    # gamma, the newest, is still settling: its best 100-item window against its last one
    # measured 0-0.11 over 24 runs (CI saw 0.10), with or without the drift catch-up.
    assert stats["tags"]["gamma"]["forgetting"] < 0.15, stats["tags"]
    assert_model_label_everywhere(registry, settings.model_name)

    # A restarted learner resumes the best values, so forgetting survives the restart.
    await aredis.delete(Keys(settings.model_name).lease)  # the first learner is gone
    again, _ = metered(settings, aredis)
    await begin(again)
    assert again.tag_accuracy.report()["alpha"][1] == pytest.approx(alpha["forgetting"], abs=1e-3)


async def test_publish_outcomes_are_counted(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(holdout_fraction=0.0, publish_every_samples=100)
    await init_deployment(settings, aredis)
    service, registry = metered(settings, aredis)
    await begin(service)

    ax, ay = domain(100, 1)
    await append(aredis, settings, ax, ay, ["alpha"] * 100)
    await service.step()
    # The golden set holds alpha's true labels; the rotated relabelling contradicts it.
    golden_x, golden_y = domain(60, 5)
    await GoldenSet(aredis, Keys(settings.model_name), Scripts(aredis)).add(
        [(vector_to_bytes(row), LABELS[int(c)], "") for row, c in zip(golden_x, golden_y, strict=True)])
    gx, gy = domain(100, 6, rotate=1)
    await append(aredis, settings, gx, gy, ["alpha"] * 100)
    await service.step()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registry down")

    service.registry.allocate_version = boom  # type: ignore[method-assign]
    await append(aredis, settings, ax, ay, ["alpha"] * 100)
    with pytest.raises(RuntimeError):
        await service.step()

    outcomes = {o: value(registry, "mnemo_model_publish_total", settings, outcome=o)
                for o in ("published", "rejected", "failed")}
    assert outcomes == {"published": 1, "rejected": 1, "failed": 1}
    assert service.served_version == 1


async def test_tags_beyond_max_tags_fold_into_other_and_untagged_is_its_own(
    settings_for: Callable[..., Settings], aredis: Redis
) -> None:
    settings = settings_for(max_tags=2, holdout_fraction=0.5, publish_every_samples=500)
    await init_deployment(settings, aredis)
    service, registry = metered(settings, aredis)
    await begin(service)
    x, y = domain(500, 7)
    tags = ["t1", "t2", "t3", "t4", ""] * 100
    await append(aredis, settings, x, y, tags)
    await drain(service)
    assert value(registry, "mnemo_model_publish_total", settings, outcome="published") == 1

    stats = (await StatsStore(aredis, Keys(settings.model_name)).read()).learner
    assert set(stats["tags"]) == {"t1", "t2", "other", "untagged"}
    for tag in ("t1", "t2", "other", "untagged"):
        acc = value(registry, "mnemo_accuracy", settings, tag=tag)
        assert acc is not None and acc == pytest.approx(stats["tags"][tag]["accuracy"], abs=1e-4)
    for tag in ("t3", "t4", ""):
        assert value(registry, "mnemo_accuracy", settings, tag=tag) is None
    assert_model_label_everywhere(registry, settings.model_name)


def test_learn_process_serves_metrics_over_http(model_name: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update(MNEMO_REDIS_URL=REDIS_URL, MNEMO_MODEL_NAME=model_name, MNEMO_INPUT_DIM="4",
               MNEMO_LABELS=",".join(LABELS), MNEMO_LEARNER_METRICS_PORT=str(port))
    log_path = tmp_path / "learn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service", "learn"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        families: dict[str, Any] = {}
        while "mnemo_learner_samples" not in families:
            assert proc.poll() is None, f"learn exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no metrics:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
                families = {f.name: f for f in text_string_to_metric_families(response.text)}
            time.sleep(0.1)
        for name in ("mnemo_learner_samples", "mnemo_learner_steps", "mnemo_learner_loss",
                     "mnemo_learner_penalty", "mnemo_feedback_lag_items", "mnemo_reservoir_size",
                     "mnemo_model_publish", "mnemo_prequential_accuracy",
                     "mnemo_balanced_accuracy", "mnemo_accuracy", "mnemo_forgetting",
                     "mnemo_concept_drift_events"):
            assert name in families, name
        samples = [s for name, f in families.items() if name.startswith("mnemo_")
                   for s in f.samples]
        assert samples and all(s.labels["model"] == model_name for s in samples)
        published = {s.labels["outcome"]: s.value for s in families["mnemo_model_publish"].samples
                     if s.name == "mnemo_model_publish_total"}
        assert published == {"published": 0.0, "rejected": 0.0, "failed": 0.0}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
