"""Fuzzing: requests generated from the app's own OpenAPI schema (schemathesis strategies,
both schema-conforming and schema-violating, driven by hypothesis) against every route,
in-process with the app's lifespan run and the real Redis. Over 2,000 requests: no 5xx, and
every refused (4xx) request leaves the model's stored state exactly as it was."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import redis
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from service.config import Settings
from tests.conftest import running_app, snapshot

TOKEN, ADMIN = "fuzz-api-token", "fuzz-admin-token"
EXAMPLES = 130  # per operation and generation mode: > 2,000 requests over the routes
# Purge requests: fewer of those (each scans the keyspace; no learner runs here, so they
# answer 202 at once).
FEW = {"/v1/data/purge": 20}
ADMIN_ROUTES = ("/v1/golden", "/v1/learning/", "/v1/data/", "/activate")
WRONG = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="},
         {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {ADMIN}"}]


def auth_for(path: str) -> st.SearchStrategy[dict[str, str]]:
    """Mostly the right token for the route (to reach its validation), sometimes another."""
    right = ADMIN if any(part in path for part in ADMIN_ROUTES) else TOKEN
    return st.sampled_from([{"Authorization": f"Bearer {right}"}] * len(WRONG) + WRONG)
SKIP = {"/metrics", "/dashboard", "/docs", "/openapi.json"}  # no body, no parameters, no state


def seed_state(portal: BlockingPortal, client: httpx.AsyncClient) -> None:
    """Something for reads, ids and versions to find."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = portal.call(lambda: client.post("/v1/predict", headers=auth,
                                             json={"inputs": [[1.0, 2.0, 3.0, 4.0]], "ids": ["p1"]}))
    assert answer.status_code == 200, answer.text
    fed = portal.call(lambda: client.post("/v1/feedback", headers=auth, json={"items": [
        {"prediction_id": "p1", "label": "setosa"},
        {"inputs": [0.5, 0.5, 0.5, 0.5], "label": "virginica", "feedback_id": "f1"}]}))
    assert fed.status_code == 202, fed.text


def test_generated_requests_never_5xx_and_refusals_change_nothing(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    settings = make_settings(api_token=TOKEN, admin_token=ADMIN, max_batch=8, max_body_bytes=65536)
    outcomes: Counter[tuple[str, int]] = Counter()
    # The app and its lifespan run on an event loop in a portal thread; hypothesis drives it
    # synchronously from here.
    with start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(running_app(settings)) as client:
        seed_state(portal, client)
        schema = schemathesis.openapi.from_dict(client.app.openapi())
        operations = [result.ok() for result in schema.get_all_operations()]
        operations = [op for op in operations if op.path not in SKIP]
        assert len(operations) >= 15, [op.path for op in operations]

        # Nothing but these requests writes the model's keys (no learner runs), so the state
        # before a request is the state after the previous one: one snapshot per request.
        state = [snapshot(redis_client, model_name)]

        def exercise(case: Any, auth: dict[str, str]) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://mnemo")
            headers = {**(kwargs.get("headers") or {}), **auth}
            before = state[0]
            response = portal.call(lambda: client.request(
                kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params"),
                json=kwargs.get("json"), content=kwargs.get("data") or kwargs.get("content")))
            label = f"{case.method} {case.path}"
            outcomes[(label, response.status_code)] += 1
            assert response.status_code < 500, (label, kwargs, response.text)
            state[0] = snapshot(redis_client, model_name)
            if 400 <= response.status_code < 500:
                assert state[0] == before, (label, kwargs, response.text)

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run = hypothesis.settings(
                    max_examples=FEW.get(operation.path, EXAMPLES), deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )(given(case=operation.as_strategy(generation_mode=mode), auth=auth_for(operation.path))(exercise))
                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    # Nothing to break in a route without parameters or body.
                    assert mode is GenerationMode.NEGATIVE, operation.path
    total = sum(outcomes.values())
    by_status = Counter()
    for (_, status), n in outcomes.items():
        by_status[status] += n
    print(f"{total} requests over {len(operations)} operations: {dict(sorted(by_status.items()))}")
    assert total >= 2000
    print(sorted(outcomes.items()))
    assert by_status[401] > 0 and by_status[422] > 0  # refusals were exercised...
    assert sum(n for s, n in by_status.items() if s < 300) > 100  # ...and so were successes
