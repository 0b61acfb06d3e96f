"""Poisoning with a golden set (docs/DESIGN.md §6): after honest learning, a burst sent with the
ordinary API token in which 30% of the items carry a targeted wrong label (every item of
class "a" relabelled "b") arrives in many small requests, so many candidates are gated one
after another. The poisoned candidates fail the gate, the served version's golden-set accuracy
drops by at most 2 points, and the rejections show in /v1/versions and in the learner's
mnemo_model_publish_total{outcome="rejected"}."""

from __future__ import annotations

import httpx
import numpy as np
import redis

from service.store.codec import decode_entry
from service.store.keys import Keys
from tests.conftest import REDIS_URL
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import ADMIN, LABELS, Cluster, blobs, items, versions, wait_caught_up

TOKEN = "reliability-api-token"
BATCH = 10  # items per request, one candidate each in the slow burst


def send(api: httpx.Client, x: np.ndarray, y: list[str], prefix: str, slow: bool = False) -> int:
    """In requests of BATCH items; `slow`: each one processed (and gated, as publish_every
    is small) before the next, the way a patient attacker would feed it."""
    for start in range(0, len(y), BATCH):
        chunk = [{"inputs": [float(v) for v in row], "label": label,
                  "feedback_id": f"{prefix}-{start + i}"}
                 for i, (row, label) in enumerate(zip(x[start : start + BATCH],
                                                      y[start : start + BATCH], strict=True))]
        response = api.post("/v1/feedback", json={"items": chunk})
        assert response.status_code == 202, response.text
        if slow:
            wait_for(lambda: api.get("/v1/stats").json()["feedback_lag"] == 0, 60,
                     "the learner to process the request")
    return len(y)


def golden_accuracy(api: httpx.Client, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    answer = api.post("/v1/predict", json={"inputs": x.tolist()}).raise_for_status().json()
    predicted = [p["label"] for p in answer["predictions"]]
    return float(np.mean([p == LABELS[t] for p, t in zip(predicted, y, strict=True)])), \
        answer["model_version"]


def test_a_targeted_relabelling_burst_is_stopped_by_the_golden_set(procs: Procs,
                                                                   model_name: str) -> None:
    cluster = Cluster(procs, REDIS_URL, model_name, api_token=TOKEN, gate_tolerance=0.02,
                      publish_every_samples=BATCH)
    node = cluster.serve()
    learner = cluster.learn()
    api = httpx.Client(base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})
    golden_x, golden_y = blobs(300, seed=70)
    response = api.post("/v1/golden", json={"items": items(golden_x, golden_y, "g")},
                        headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201, response.text

    clean_x, clean_y = blobs(800, seed=71)
    total = send(api, clean_x, [LABELS[t] for t in clean_y], "clean")
    wait_caught_up(api, total, procs)
    before, honest_version = golden_accuracy(api, golden_x, golden_y)
    assert before >= 0.85, before  # it learned the three classes

    # The burst: 30% class-"a" inputs labelled "b", 70% honest "b" and "c" items, shuffled.
    n = 600
    poisoned_x, _ = blobs(int(n * 0.3), seed=72, classes=[0])
    honest_x, honest_y = blobs(n - len(poisoned_x), seed=73, classes=[1, 2])
    order = np.random.default_rng(74).permutation(n)
    burst_x = np.concatenate([poisoned_x, honest_x])[order]
    burst_y = (["b"] * len(poisoned_x) + [LABELS[t] for t in honest_y])
    burst_y = [burst_y[i] for i in order]
    first_new = max(versions(api)) + 1
    # The clean phase may have had rejections of its own (the holdout's noise, below).
    rejected_before = learner.metric("mnemo_model_publish_total", outcome="rejected")
    total += send(api, burst_x, burst_y, "burst", slow=True)
    wait_caught_up(api, total, procs)

    after, served_version = golden_accuracy(api, golden_x, golden_y)
    listed = versions(api)
    candidates = [listed[v] for v in sorted(listed) if v >= first_new]
    summary = [(c["version"], c["status"], c["eval"].get("golden_accuracy"),
                c["eval"].get("golden_served_accuracy")) for c in candidates]
    print(f"golden accuracy {before:.3f} (v{honest_version}) -> {after:.3f} (v{served_version}); "
          f"candidates {summary}")
    rejected = [c for c in candidates if c["status"] == "rejected"]
    # Every rejection names its check; the golden set is what stops the burst (the recent
    # holdout, drawn from the same stream, may also reject an early candidate by noise: seen
    # in a CI run, candidates 0.903 vs 0.907 golden rejected by the holdout alone).
    assert rejected and all(set(c["eval"]["rejected_by"]) <= {"golden", "holdout"}
                            and c["eval"]["rejected_by"] for c in rejected)
    assert any("golden" in c["eval"]["rejected_by"] for c in rejected), summary
    assert round(before - after, 6) <= 0.02, (before, after, summary)  # golden set: 300 items
    rejected_since = learner.metric("mnemo_model_publish_total", outcome="rejected") - rejected_before
    assert rejected_since == len(rejected)
    api.close()

    # A rejected candidate's samples leave the replay buffer: the poisoned items left there
    # came in with candidates that passed, never with rejected ones.
    poisoned_at = {i for i in range(n) if order[i] < len(poisoned_x)}  # positions in the burst
    included = 0
    allowed = 0
    for candidate in candidates:
        start, included = included, candidate["samples_seen"] - (total - n)
        if candidate["status"] != "rejected":
            allowed += len(poisoned_at & set(range(start, included)))
    poison = {row.tobytes() for row in poisoned_x}
    with redis.Redis.from_url(REDIS_URL) as client:
        reservoir = client.hvals(Keys(model_name).reservoir)
    kept = sum(decode_entry(entry)[0].tobytes() in poison for entry in reservoir)
    print(f"poisoned items in the replay buffer: {kept} (from passed candidates: {allowed})")
    assert kept <= allowed
