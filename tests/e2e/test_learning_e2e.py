"""What a new user of `python -m service run` gets while labels stream in (defaults, embedded
server, 16 rows per predict, feedback by prediction id at 200 labels/s; the driver of
`make bench-e2e`, load_tests/served_stream.py): a first learned version within the first 64
labels; a concept swap adopted without a golden set; the same swap rejected as poisoning
against a golden set of the old concept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from load_tests.learning_scores import mean
from load_tests.learning_streams import COMMON, IDENTITY, SWAP01, Labelled, Scenario, cold_start, concept_swap
from load_tests.processes import free_port
from load_tests.served_stream import (
    ROWS,
    ServedStream,
    decided,
    published,
    ready,
    scenario_settings,
    served_accuracy,
    versions,
)
from tests.e2e.procs import Procs, base_env, wait_for

ADMIN = "e2e-admin-token"
FIRST_LABELS = 64  # a fresh deployment's first learned version includes at most these
SWAP_LABELS = 1000  # labels before and after the swap
ADAPTED_WINDOW = (600, 1000)  # post-swap labels the adapted accuracy is read over
ADAPTED = 0.85
GOLDEN_ITEMS = 200
GOLDEN_DROP = 0.02  # MNEMO_GATE_TOLERANCE's default
SETTLE = 20  # seconds for the learner to decide on every label sent (it publishes every 5 s)
SWAP = concept_swap(0, plan=(("stationary", COMMON, IDENTITY, SWAP_LABELS),
                             ("swap", COMMON, SWAP01, SWAP_LABELS)))

Start = Callable[..., httpx.Client]


@pytest.fixture
def start(tmp_path: Path, procs: Procs) -> Iterator[Start]:
    """Starts `python -m service run` for a scenario (its declared settings, free ports, a
    fresh data directory, the embedded server) and returns a client once it is ready."""
    clients: list[httpx.Client] = []

    def start_service(scenario: Scenario, **extra: Any) -> httpx.Client:
        port = free_port()
        env = {**base_env(data_dir=tmp_path / "data", port=port,
                          learner_metrics_port=free_port(), **extra),
               **scenario_settings(scenario)}
        procs.start("run", ["run"], env)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        clients.append(client)
        wait_for(lambda: ready(client), 90, "the service to be ready", procs.logs, interval=0.2)
        return client

    yield start_service
    for client in clients:
        client.close()


def first_published(client: httpx.Client) -> dict[str, Any] | None:
    found = published(versions(client))
    return found[0] if found else None


def window_accuracies(correct: list[bool], size: int = 200) -> list[float | None]:
    return [mean(correct[i:i + size]) for i in range(0, len(correct), size)]


def test_fresh_deployment_publishes_within_its_first_64_labels(start: Start, procs: Procs) -> None:
    scenario = cold_start(0)
    client = start(scenario)
    stream, phase = ServedStream(client), scenario.phases[0]
    first = None
    for begin in range(0, len(phase), ROWS):  # the stream goes on while we look (bounded)
        stream.send(phase.x[begin:begin + ROWS], phase.y[begin:begin + ROWS])
        first = first_published(client)
        if first:
            break
    seen_after = stream.sent
    first = first or wait_for(lambda: first_published(client), 30, "a first published version",
                              procs.logs)
    print(f"first published version v{first['version']} ({first['status']}): samples_seen "
          f"{first['samples_seen']}, first seen after {seen_after} labels; served accuracy over "
          f"those labels {mean(stream.correct):.3f} ({stream.unpredicted} answered 409)")
    assert first["status"] in ("active", "archived")  # passed the gate and was served
    assert 0 < first["samples_seen"] <= FIRST_LABELS, first


def stream_swap(client: httpx.Client) -> tuple[ServedStream, list[bool]]:
    """SWAP's two phases through the service; the stream and the post-swap answers."""
    stream = ServedStream(client)
    stationary, swap = SWAP.phases
    stream.send(stationary.x, stationary.y)
    return stream, stream.send(swap.x, swap.y)


def test_concept_swap_without_golden_set_is_adopted(start: Start) -> None:
    client = start(SWAP)
    stream, after = stream_swap(client)
    adapted = mean(after[slice(*ADAPTED_WINDOW)])
    listing = versions(client)
    drift = client.get("/v1/stats").json()["drift"]["concept_drift_events"]
    print(f"served accuracy: last 300 before the swap {mean(stream.correct[SWAP_LABELS - 300:SWAP_LABELS]):.3f}; "
          f"after it, per 200 labels {[round(a or 0, 3) for a in window_accuracies(after)]}; "
          f"labels {ADAPTED_WINDOW[0]}-{ADAPTED_WINDOW[1]} after: {adapted:.3f}; "
          f"{len(published(listing))} published, {sum(v['status'] == 'rejected' for v in listing)} "
          f"rejected; {drift} concept drift events")
    assert adapted is not None and adapted >= ADAPTED, adapted


def golden_items(golden: Labelled) -> list[dict[str, Any]]:
    return [{"inputs": row, "label": int(label)}
            for row, label in zip(golden.x.tolist(), golden.y, strict=True)]


def test_concept_swap_against_golden_set_is_rejected_as_poisoning(start: Start, procs: Procs) -> None:
    client = start(SWAP, admin_token=ADMIN)
    old_concept = SWAP.tests[0]
    golden = Labelled("golden", old_concept.x[:GOLDEN_ITEMS], old_concept.y[:GOLDEN_ITEMS])
    response = client.post("/v1/golden", json={"items": golden_items(golden)},
                           headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201, response.text
    stream = ServedStream(client)
    stationary, swap = SWAP.phases
    stream.send(stationary.x, stationary.y)
    wait_for(lambda: decided(client, stream.sent), SETTLE, "the learner to decide", procs.logs)
    before = served_accuracy(client, golden)
    after_swap = stream.send(swap.x, swap.y)
    wait_for(lambda: decided(client, stream.sent), SETTLE, "the learner to decide", procs.logs)
    after = served_accuracy(client, golden)
    listing = versions(client)
    rejected = [v for v in listing if v["status"] == "rejected" and v["samples_seen"] > SWAP_LABELS]
    print(f"golden accuracy of the served version: {before:.3f} before the swap, {after:.3f} "
          f"after; {len(rejected)} post-swap candidates rejected, "
          f"{sum(v['samples_seen'] > SWAP_LABELS for v in published(listing))} published; served "
          f"accuracy on post-swap labels {mean(after_swap):.3f}")
    assert rejected, listing
    assert after >= before - GOLDEN_DROP, (before, after)
