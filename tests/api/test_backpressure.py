"""Load shedding (docs/DESIGN.md §3): while the learner is more than MNEMO_MAX_LAG items behind,
feedback answers 429 + Retry-After and changes nothing, predict keeps answering 200, and once
the learner's processed counter catches up feedback is accepted again with nothing that was
acknowledged (202) lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import redis

from service.config import Settings
from service.store.keys import Keys
from tests.conftest import running_app, snapshot

LABELS = ["setosa", "versicolor", "virginica"]
ROW = [5.1, 3.5, 1.4, 0.2]


def _items(ids: range) -> list[dict[str, object]]:
    return [{"inputs": [float(i), 1.0, 2.0, 3.0], "label": LABELS[i % 3], "feedback_id": f"f-{i}"}
            for i in ids]


def _shed_metric(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("mnemo_feedback_items_total{") and 'outcome="shed"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no shed series in /metrics")


async def test_shedding_keeps_predict_up_and_loses_nothing(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    keys = Keys(model_name)
    async with running_app(make_settings(max_lag=10)) as c:
        accepted_ids: list[str] = []
        first = await c.post("/v1/feedback", json={"items": _items(range(6))})
        assert first.json() == {"accepted": 6, "duplicates": 0}
        accepted_ids += [f"f:f-{i}" for i in range(6)]
        predicted = (await c.post("/v1/predict", json={"inputs": [ROW] * 4})).json()
        by_id = [{"prediction_id": p["id"], "label": "setosa"} for p in predicted["predictions"]]
        second = await c.post("/v1/feedback", json={"items": by_id})
        assert second.json() == {"accepted": 4, "duplicates": 0}  # lag 10: exactly the limit
        accepted_ids += [f"p:{p['id']}" for p in predicted["predictions"]]
        assert (await c.get("/v1/stats")).json()["feedback_lag"] == 10

        # Over the limit: 429 + Retry-After, and the refused batch changes nothing.
        before = snapshot(redis_client, model_name)
        shed = await c.post("/v1/feedback", json={"items": _items(range(10, 13))})
        assert shed.status_code == 429
        assert int(shed.headers["retry-after"]) >= 1
        assert "behind" in shed.json()["detail"]
        assert snapshot(redis_client, model_name) == before

        # Meanwhile predict answers 200, concurrently with more shed feedback.
        async def predict_many() -> list[int]:
            return [(await c.post("/v1/predict", json={"inputs": [ROW]})).status_code
                    for _ in range(20)]

        async def feedback_many() -> list[int]:
            return [(await c.post("/v1/feedback", json={"items": _items(range(20, 21))})).status_code
                    for _ in range(20)]

        predicts, feedbacks = await asyncio.gather(predict_many(), feedback_many())
        assert predicts == [200] * 20
        assert feedbacks == [429] * 20
        assert _shed_metric((await c.get("/metrics")).text) == 3 + 20
        assert redis_client.xlen(keys.stream) == 10

        # The learner catches up: it writes `processed` with its statistics, as it does
        # after learning (service/worker/loop.py LearnerService.report).
        redis_client.hset(keys.learner_stats, mapping={
            "stats": json.dumps({"model_version": 0}), "processed": 10})
        assert (await c.get("/v1/stats")).json()["feedback_lag"] == 0

        # The shed batch, retried as a client would, is accepted now: shedding did not
        # consume its dedupe ids. A repeat of an acknowledged item is still a duplicate.
        retried = await c.post("/v1/feedback", json={"items": _items(range(10, 13))})
        assert retried.status_code == 202
        assert retried.json() == {"accepted": 3, "duplicates": 0}
        accepted_ids += [f"f:f-{i}" for i in range(10, 13)]
        again = await c.post("/v1/feedback", json={"items": _items(range(2))})
        assert again.json() == {"accepted": 0, "duplicates": 2}
        assert (await c.get("/v1/stats")).json()["feedback_lag"] == 3

    # Nothing acknowledged was lost: one stream entry per accepted item, in order.
    entries = redis_client.xrange(keys.stream)
    assert len(entries) == redis_client.xlen(keys.stream) == 13
    assert int(redis_client.hget(keys.counters, "accepted")) == 13
    assert [fields[b"id"].decode() for _, fields in entries] == accepted_ids
