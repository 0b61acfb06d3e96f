"""`make bench-e2e`'s pure parts, no processes: the scenarios (deterministic, the swap and the
shift where they should be), per-phase scoring, forgetting, the table, the settings a service
gets, and the stream driver's pacing and scoring against a fake HTTP transport."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest

from load_tests import learning_table
from load_tests.bench_learning import _scenarios
from load_tests.learning_scores import Run, best, forgetting, per_phase, phase_bounds, summarize
from load_tests.learning_streams import (
    CLASSES,
    COMMON,
    IDENTITY,
    SWAP01,
    Blobs,
    cold_start,
    concept_swap,
    domain_digits,
    phishing,
    rotate,
    split_digits,
)
from load_tests.river_peers import logistic, run_peer
from load_tests.served_stream import ServedStream, scenario_settings, service_env, versions


def test_scenarios_are_deterministic_from_the_seed_and_test_sets_are_fixed() -> None:
    a, b, c = concept_swap(0), concept_swap(0), concept_swap(1)
    for p, q in zip(a.phases, b.phases, strict=True):
        assert np.array_equal(p.x, q.x) and np.array_equal(p.y, q.y)
    assert not np.array_equal(a.phases[0].x, c.phases[0].x)  # the seed draws the stream
    for p, q in zip(a.tests, c.tests, strict=True):  # ... never the test sets
        assert np.array_equal(p.x, q.x) and np.array_equal(p.y, q.y)
    assert [len(p) for p in a.phases] == [1500, 1500, 1000] and a.labels == 4000
    assert a.input_dim == 8 and all(p.tag is None for p in a.phases)


def test_the_swap_exchanges_labels_0_and_1_on_the_same_inputs() -> None:
    blobs = Blobs(0)
    x0, y0 = blobs.sample(np.random.default_rng(5), 2000, COMMON, IDENTITY)
    x1, y1 = blobs.sample(np.random.default_rng(5), 2000, COMMON, SWAP01)
    assert np.array_equal(x0, x1)
    assert np.array_equal(y1, SWAP01[y0]) and (y1 != y0).mean() > 0.3
    assert set(y0.tolist()) == set(range(CLASSES))


def test_the_covariate_shift_moves_the_inputs_not_the_answers() -> None:
    scenario = concept_swap(0)
    swap, shift = scenario.tests[1], scenario.tests[2]
    blobs = Blobs(0)
    nearest = [np.argmin(np.linalg.norm(t.x[:, None] - blobs.centres[None], axis=2), axis=1)
               for t in (swap, shift)]
    common_share = [float(np.mean(n < CLASSES)) for n in nearest]  # blobs 0-3 common at first
    assert common_share[0] > 0.7 > 0.3 > common_share[1]
    for test, blob in zip((swap, shift), nearest, strict=True):  # the same answer rule
        assert np.mean(SWAP01[blob % CLASSES] == test.y) > 0.95


def test_cold_start_reports_its_first_labels() -> None:
    scenario = cold_start(0)
    assert scenario.first == 500 and scenario.labels == 1000 and len(scenario.tests) == 1


def test_domain_digits_rotates_each_pass_and_its_test_set() -> None:
    scenario = domain_digits(0)
    assert [p.tag for p in scenario.phases] == ["rot0", "rot90", "rot180", "rot270"]
    assert [len(p) for p in scenario.phases] == [1437] * 4 and [len(t) for t in scenario.tests] == [360] * 4
    x = scenario.tests[0].x
    assert np.array_equal(scenario.tests[1].x, rotate(x, 1))
    assert np.array_equal(rotate(rotate(x, 1), 3), x)
    assert np.array_equal(rotate(x, 1)[0].reshape(8, 8), np.rot90(x[0].reshape(8, 8)))
    assert sorted(scenario.phases[1].y.tolist()) == sorted(scenario.phases[0].y.tolist())


def test_split_digits_teaches_two_classes_per_task() -> None:
    scenario = split_digits(0)
    for t, (phase, test) in enumerate(zip(scenario.phases, scenario.tests, strict=True)):
        assert set(phase.y.tolist()) == set(test.y.tolist()) == {2 * t, 2 * t + 1}
        assert phase.tag == test.tag == f"d{2 * t}-{2 * t + 1}"
    assert scenario.labels == 1437
    assert scenario.overall is not None and len(scenario.overall) == 360 and scenario.overall.tag is None


def test_phishing_comes_from_the_installed_wheel_in_its_order() -> None:
    scenario = phishing(0)
    assert scenario.labels == 1250 and scenario.input_dim == 9
    assert set(scenario.phases[0].y.tolist()) == {0, 1}
    assert np.array_equal(phishing(1).phases[0].y, scenario.phases[0].y)  # seed-free order


def test_per_phase_accuracy_and_its_last_labels() -> None:
    correct = [False] * 4 + [True] * 6 + [True, False, True, True]
    assert phase_bounds([10, 4]) == [(0, 10), (10, 14)]
    assert per_phase(correct, [10, 4], last=3) == [{"preq": 0.6, "last3": 1.0},
                                                  {"preq": 0.75, "last3": 2 / 3}]
    with pytest.raises(ValueError, match="14 answers for a stream of 15"):
        per_phase(correct, [10, 5])


def test_forgetting_is_best_before_the_end_minus_final() -> None:
    matrix = [[0.9, 0.1, 0.0],
              [0.7, 0.8, 0.2],
              [0.6, 0.85, 0.9]]
    got = forgetting(matrix)
    assert got[0] == pytest.approx(0.3) and got[1] == pytest.approx(-0.05) and got[2] is None
    assert forgetting([[0.5]]) == [None] and forgetting([]) == []


def test_summary_and_best_peer() -> None:
    run = Run(correct=[True, False, True, True], matrix=[[0.5, 0.0], [0.4, 0.8]], overall=0.6)
    s = summarize(run, ["a", "b"], [2, 2], ["a", "b"], first=2)
    assert s["phases"]["b"]["preq"] == 1.0 and s["preq_all"] == 0.75 and s["first2"] == 0.5
    assert s["final"] == {"a": 0.4, "b": 0.8} and s["final_avg"] == pytest.approx(0.6)
    assert s["forgetting"]["a"] == pytest.approx(0.1) and s["overall"] == 0.6
    assert best({"x": 0.2, "y": 0.5, "z": None}) == ("y", 0.5)
    assert best({"x": 0.2, "y": 0.5}, higher=False) == ("x", 0.2)
    assert best({"x": None}) is None


def _result(mnemo: dict[str, Any], peers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"scenario": "two tasks", "about": "test", "phases": ["a", "b"], "tasks": ["a", "b"],
            "first": None, "overall": None, "settings": {"MNEMO_INPUT_DIM": "8"},
            "defaults": "MNEMO_STRATEGY=replay", "mnemo": mnemo, "peers": peers,
            "registry": {"published": 3, "rejected": 1, "current": 4, "concept_drift_events": 2},
            "stream": {"labels": 4, "rate": 200.0, "unpredicted": 0, "settle_seconds": [1.0, 2.0]},
            "seconds": {"service": 10.0}}


def test_table_rows_and_best_peer_per_figure() -> None:
    def summary(forget_a: float, final_b: float) -> dict[str, Any]:
        run = Run([True, True, False, True], [[0.9, 0.1], [0.9 - forget_a, final_b]], seconds=1.0)
        return summarize(run, ["a", "b"], [2, 2], ["a", "b"])

    table = learning_table.scenario_table(_result(summary(0.0, 0.5),
                                                  {"River LR": summary(0.3, 0.9),
                                                   "River HAT": summary(0.1, 0.7)}))
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()
            if line.startswith("| ")}
    assert rows["forgetting: a"].endswith("| 0.100 (HAT) |")  # lowest forgetting
    assert rows["final accuracy: b"].endswith("| 0.900 (LR) |")  # highest accuracy
    assert "forgetting: b" not in rows  # nothing came after the last task
    assert rows["prequential: a, last 300"].startswith("| prequential: a, last 300 | 1.000 |")
    assert "**3 versions published, 1 rejected**" in table and "**2 concept drift events**" in table


def test_scenario_names_on_the_command_line() -> None:
    assert _scenarios("swap,cold") == ["swap", "cold"]
    with pytest.raises(argparse.ArgumentTypeError, match="scenarios are"):
        _scenarios("swap,nope")


def test_a_service_gets_the_defaults_plus_what_the_scenario_declares(tmp_path: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNEMO_REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("MNEMO_STRATEGY", "naive")
    settings = scenario_settings(domain_digits(0))
    assert settings == {"MNEMO_INPUT_DIM": "64", "MNEMO_LABEL_TYPE": "int"}
    env = service_env(settings, tmp_path / "data")
    mnemo = {k: v for k, v in env.items() if k.startswith("MNEMO_")}
    assert set(mnemo) == {"MNEMO_INPUT_DIM", "MNEMO_LABEL_TYPE", "MNEMO_HOST", "MNEMO_PORT",
                          "MNEMO_LEARNER_METRICS_PORT", "MNEMO_DATA_DIR"}  # embedded server
    assert mnemo["MNEMO_HOST"] == "127.0.0.1" and mnemo["MNEMO_PORT"] != mnemo["MNEMO_LEARNER_METRICS_PORT"]


class FakeService:
    """Predicts class 1 for every row once `classes` is set (409 before); records bodies."""

    def __init__(self) -> None:
        self.classes: list[int] = []
        self.feedback: list[dict[str, Any]] = []
        self.predict_times: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if request.url.path == "/v1/predict":
            self.predict_times.append(time.monotonic())
            if not self.classes:
                return httpx.Response(409, json={"detail": "no class yet"})
            rows = len(body["inputs"])
            return httpx.Response(200, json={"model_version": 1, "labels": self.classes, "predictions": [
                {"id": f"p{len(self.predict_times)}-{i}", "label": 1, "probabilities": [0, 1]}
                for i in range(rows)]})
        if request.url.path == "/v1/feedback":
            self.feedback.append(body)
            return httpx.Response(202, json={"accepted": len(body["items"]), "duplicates": 0})
        before = request.url.params.get("before")
        page = [{"version": 3, "status": "active"}] if before is None else [{"version": 1, "status": "rejected"}]
        return httpx.Response(200, json={"versions": page, "next": None if before else "2"})


def test_stream_scores_served_answers_and_labels_by_prediction_id() -> None:
    fake = FakeService()
    client = httpx.Client(transport=httpx.MockTransport(fake.handle), base_url="http://127.0.0.1")
    stream = ServedStream(client, rate=10_000, rows=4)
    y = np.array([1, 0, 1, 1, 2, 1])
    assert stream.send(np.zeros((6, 2), np.float32), y, tag="t") == [False] * 6  # 409: wrong
    assert stream.unpredicted == 6
    sent = fake.feedback[0]["items"][0]
    assert sent.pop("feedback_id")  # the client names every item so a retry counts once
    assert sent == {"inputs": [0.0, 0.0], "label": 1, "tag": "t"}
    fake.classes = [0, 1, 2]
    assert stream.send(np.zeros((6, 2), np.float32), y) == [True, False, True, True, False, True]
    assert fake.feedback[-1]["items"][0] == {"prediction_id": fake.feedback[-1]["items"][0]["prediction_id"],
                                             "label": 2}
    assert stream.sent == 12 and [v["version"] for v in versions(client)] == [3, 1]  # paged


def test_stream_sends_records_as_the_api_takes_them() -> None:
    fake = FakeService()
    client = httpx.Client(transport=httpx.MockTransport(fake.handle), base_url="http://127.0.0.1")
    stream = ServedStream(client, rate=10_000, rows=2)
    records = ({"colour": "red", "size": 2.0}, {"colour": None}, {"size": -1.5})
    y = np.array([1, 0, 1])
    assert stream.send(records, y) == [False] * 3  # 409: labelled with their records
    assert [{k: v for k, v in item.items() if k != "feedback_id"}
            for body in fake.feedback for item in body["items"]] == [
        {"inputs": {"colour": "red", "size": 2.0}, "label": 1},
        {"inputs": {"colour": None}, "label": 0}, {"inputs": {"size": -1.5}, "label": 1}]
    fake.classes = [0, 1]
    assert stream.send(records, y) == [True, False, True]  # answered, labelled by id


def test_stream_is_paced_to_its_label_rate() -> None:
    fake = FakeService()
    fake.classes = [0, 1]
    client = httpx.Client(transport=httpx.MockTransport(fake.handle), base_url="http://127.0.0.1")
    stream = ServedStream(client, rate=800, rows=8)  # a request every 10 ms
    stream.send(np.zeros((88, 2), np.float32), np.ones(88, np.int64))
    gaps = np.diff(fake.predict_times)
    # 11 requests, one slot of 10 ms each; a few ms of slack for when the fake sees each
    # request (a burst would take ~1 ms in all).
    assert len(gaps) == 10 and gaps.sum() >= 0.09
    assert 88 / stream.streaming_seconds <= 800 * 1.001


def test_river_peer_runs_test_then_train_with_the_test_reads() -> None:
    scenario = concept_swap(0, test_size=50, plan=(("stationary", COMMON, IDENTITY, 300),
                                                   ("swap", COMMON, SWAP01, 300)))
    run = run_peer(logistic, scenario, 0)
    assert len(run.correct) == 600 and run.correct[0] is False  # nothing learned yet
    assert len(run.matrix) == 2 and all(len(row) == 2 for row in run.matrix)
    assert run.matrix[0][0] > 0.6  # learned the first concept
