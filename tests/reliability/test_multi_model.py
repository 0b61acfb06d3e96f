"""Several models in one deployment, through real processes: one API process and learners
that split the models' leases between them. Each model learns its own stream; when a learner
is killed, the others take its models over within the lease TTL + 2 s and no item answered
202 is lost, for any model."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from service.store.keys import Keys
from tests.conftest import REDIS_URL, delete_model_keys
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import FAST, Cluster, Feeder, Node

TTL = float(FAST["lease_ttl_seconds"])  # type: ignore[arg-type]


@pytest.fixture
def four(model_name: str, redis_client: redis.Redis) -> Iterator[list[str]]:
    names = [f"{model_name}-{i}" for i in range(4)]
    yield names
    for name in names:
        delete_model_keys(redis_client, name)


def _holders(r: redis.Redis, names: list[str]) -> dict[str, int | None]:
    """model -> the pid of the learner holding its lease (owner is host:pid:nonce)."""
    owners = [r.get(Keys(name).lease) for name in names]
    return {name: int(o.decode().split(":")[1]) if o else None
            for name, o in zip(names, owners, strict=True)}


def _samples_seen(api: httpx.Client, name: str) -> int:
    return int(api.get(f"/v1/models/{name}/stats").json()["samples_seen"])


def test_two_learners_split_four_models_and_take_over_a_killed_ones(
        procs: Procs, four: list[str], redis_client: redis.Redis, tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n" + "".join(f"  - name: {n}\n" for n in four))
    cluster = Cluster(procs, REDIS_URL, four[0], models=catalog)
    api_node = cluster.serve()
    learners = [cluster.learn(), cluster.learn()]
    pids = {node.proc.pid: node for node in learners}
    feeders = [Feeder([api_node.url], f"m{i}-", model=name, seed=i).start()
               for i, name in enumerate(four)]
    api = httpx.Client(base_url=api_node.url, timeout=10)
    try:
        # The leases split two and two (the first learner up hands two back to the second).
        wait_for(lambda: sorted(list(_holders(redis_client, four).values()).count(pid)
                                for pid in pids) == [2, 2],
                 30, "the learners to hold two models each", procs.logs)
        for name in four:
            wait_for(lambda n=name: _samples_seen(api, n) > 0, 30, f"{name} to learn",
                     procs.logs)
        victim, survivor = learners
        lost = [n for n, pid in _holders(redis_client, four).items() if pid == victim.proc.pid]
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: set(_holders(redis_client, four).values()) == {survivor.proc.pid},
                 TTL + 2, "the survivor to take every model within TTL + 2 s", procs.logs,
                 interval=0.02)
        took = time.monotonic() - killed_at
        for name in lost:  # and it trains them
            seen = _samples_seen(api, name)
            wait_for(lambda n=name, s=seen: _samples_seen(api, n) > s, 30,
                     f"the survivor to learn {name}", procs.logs)
        print(f"took over {len(lost)} models in {took:.2f} s")
    finally:
        for feeder in feeders:
            feeder.stop()
    # Nothing answered 202 is lost, for any model.
    for name, feeder in zip(four, feeders, strict=True):
        assert feeder.accepted, name
        wait_for(lambda n=name, f=feeder: _samples_seen(api, n) == len(f.accepted), 60,
                 f"{name} to process every accepted item", procs.logs)
    assert survivor.metric("mnemo_learner_samples_total", model=lost[0]) > 0


def test_two_models_of_different_shapes_each_learn_their_own_stream(
        procs: Procs, model_name: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    blobs_model, bits_model = f"{model_name}-blobs", f"{model_name}-bits"
    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"models:\n  - name: {blobs_model}\n  - name: {bits_model}\n"
                       "    input_dim: 2\n    label_type: int\n    labels: [0, 1]\n")
    try:
        cluster = Cluster(procs, REDIS_URL, blobs_model, models=catalog)
        api_node = cluster.serve()
        learner = cluster.learn()
        feeder = Feeder([api_node.url], "blobs-", model=blobs_model, limit=400).start()
        api = httpx.Client(base_url=api_node.url, timeout=10)
        # The second model's concept: the label is whether the first number beats the second.
        rng = np.random.default_rng(1)
        x = rng.normal(size=(400, 2))
        for start in range(0, 400, 50):
            chunk = [{"inputs": row.tolist(), "label": int(row[0] > row[1])}
                     for row in x[start:start + 50]]
            sent = api.post(f"/v1/models/{bits_model}/feedback", json={"items": chunk})
            assert sent.status_code == 202, sent.text
        wait_for(feeder.done, 60, "the feeder to finish", procs.logs)
        wait_for(lambda: _samples_seen(api, blobs_model) == len(feeder.accepted)
                 and _samples_seen(api, bits_model) == 400, 60, "both models to learn",
                 procs.logs)
        wait_for(lambda: _served(api, bits_model) > 0 and _served(api, blobs_model) > 0, 30,
                 "both to serve a learnt version", procs.logs)
        probe = rng.normal(size=(200, 2))
        answer = api.post(f"/v1/models/{bits_model}/predict", json={"inputs": probe.tolist()})
        predicted = [p["label"] for p in answer.json()["predictions"]]
        accuracy = np.mean(np.array(predicted) == (probe[:, 0] > probe[:, 1]))
        assert accuracy > 0.8, accuracy
        for name in (blobs_model, bits_model):
            assert learner.metric("mnemo_learner_samples_total", model=name) > 0
            assert _api_metric(api_node, name) > 0
    finally:
        for name in (blobs_model, bits_model):
            delete_model_keys(redis_client, name)


def _served(api: httpx.Client, name: str) -> int:
    version = api.get(f"/v1/models/{name}").json()["version"]
    return int(version or 0)


def _api_metric(node: Node, name: str) -> float:
    return node.metric("mnemo_feedback_items_total", model=name, outcome="accepted")
