"""mnemo_client against a real `python -m service run` (API + learner on the test Redis, API
and admin tokens set): one server for the module. The retry policy's timing is tested on
scripted answers (httpx.MockTransport): it is the client's behaviour under test there."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from safetensors.numpy import load as load_safetensors

from mnemo_client import (
    AsyncClient,
    AuthError,
    ByPrediction,
    Client,
    ConflictError,
    ConnectionFailedError,
    MnemoError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    ValidationError,
    WithInputs,
    with_feedback_ids,
)
from tests.conftest import REDIS_URL, delete_model_keys, free_port
from tests.e2e.procs import Procs, base_env, wait_for

TOKEN, ADMIN = "client-api-token", "client-admin-token"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = f"t-{uuid.uuid4().hex[:12]}"
    procs = Procs(tmp_path_factory.mktemp("client"))
    port = free_port()
    try:
        procs.start("run", ["run"], base_env(
            port=port, learner_metrics_port=0, redis_url=REDIS_URL, model_name=model,
            input_dim=4, labels="setosa,versicolor,virginica", api_token=TOKEN,
            admin_token=ADMIN))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 60, "the API",
                 procs.logs)
        yield base
    finally:
        procs.stop_all()
        client = redis.Redis.from_url(REDIS_URL)
        delete_model_keys(client, model)
        client.close()


class LoseFirstAnswer(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Sends every request to the real server, but the first answer to `path` is read and
    then dropped: the connection broke after the server had acted on the request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.bodies: list[bytes] = []  # what reached the server at `path`
        self._sync, self._async = httpx.HTTPTransport(), httpx.AsyncHTTPTransport()

    def _lose(self, request: httpx.Request) -> bool:
        if request.url.path != self.path:
            return False
        self.bodies.append(request.content)
        return len(self.bodies) == 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._sync.handle_request(request)
        response.read()
        if self._lose(request):
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._async.handle_async_request(request)
        await response.aread()
        if self._lose(request):
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


def stored(client: Client) -> int:
    """Items the server has accepted so far: processed by the learner plus still waiting."""
    stats = client.stats()
    return stats.samples_seen + stats.feedback_lag


def test_predict_then_feedback_by_id_counts_a_repeat_as_duplicate(url: str) -> None:
    with Client(url, token=TOKEN) as mnemo:
        before = stored(mnemo)
        answer = mnemo.predict(ROWS[:2], tag="client-a")
        assert len(answer) == 2 and answer.logged and answer.model_version >= 0
        assert set(answer.labels) == {"setosa", "versicolor", "virginica"}
        assert all(p.label in answer.labels and len(p.probabilities) == 3 for p in answer)
        items = [ByPrediction(p.id, label) for p, label in zip(answer, ["setosa", "virginica"], strict=True)]
        first = mnemo.feedback(items)
        again = mnemo.feedback(items)
        assert (first.accepted, first.duplicates, first.attempts) == (2, 0, 1)
        assert (again.accepted, again.duplicates) == (0, 2)
        assert stored(mnemo) - before == 2


def test_feedback_whose_answer_was_lost_is_retried_and_counted_once(url: str) -> None:
    transport = LoseFirstAnswer("/v1/feedback")
    with Client(url, token=TOKEN) as mnemo, \
            Client(token=TOKEN, http=httpx.Client(base_url=url, transport=transport), backoff=0.01) as lossy:
        before = stored(mnemo)
        result = lossy.feedback([WithInputs(row, "versicolor") for row in ROWS])
        # The first try stored all three; its answer never came, so the retry finds them.
        assert (result.accepted, result.duplicates, result.attempts) == (0, 3, 2)
        assert len(transport.bodies) == 2 and transport.bodies[0] == transport.bodies[1]
        assert stored(mnemo) - before == 3


async def test_async_client_predicts_labels_and_retries_a_lost_answer_once(url: str) -> None:
    transport = LoseFirstAnswer("/v1/feedback")
    http = httpx.AsyncClient(base_url=url, transport=transport)
    async with AsyncClient(url, token=TOKEN) as mnemo, \
            AsyncClient(token=TOKEN, http=http, backoff=0.01) as lossy:
        stats = await mnemo.stats()
        before = stats.samples_seen + stats.feedback_lag
        answer = await mnemo.predict(ROWS, ids=[f"async-{uuid.uuid4().hex}-{i}" for i in range(3)])
        assert answer.ids[0].startswith("async-") and len(answer) == 3
        result = await lossy.feedback([ByPrediction(pid, "setosa") for pid in answer.ids])
        assert (result.accepted, result.duplicates, result.attempts) == (0, 3, 2)
        again = await mnemo.feedback([ByPrediction(pid, "setosa") for pid in answer.ids])
        assert (again.accepted, again.duplicates) == (0, 3)
        stats = await mnemo.stats()
        assert stats.samples_seen + stats.feedback_lag - before == 3
        assert (await mnemo.version()).version == (await mnemo.versions(limit=1)).current
    await http.aclose()


def test_refusals_raise_with_the_servers_detail(url: str) -> None:
    with Client(url, token=TOKEN) as mnemo:
        with pytest.raises(ValidationError) as refused:
            mnemo.feedback([WithInputs([1.0, 2.0], "setosa"), WithInputs(ROWS[0], "setosa")])
        assert refused.value.status == 422 and ("items", 0, "inputs") in refused.value.locations
        assert "items.0.inputs" in str(refused.value)
        with pytest.raises(ValidationError) as refused:
            mnemo.predict([ROWS[0]], ids=["a", "b"])  # two ids for one row
        assert refused.value.locations == [("ids",)]
        with pytest.raises(NotFoundError, match="version 999 does not exist") as missing:
            mnemo.version(999)
        assert missing.value.detail == "version 999 does not exist"
        with pytest.raises(AuthError) as no_admin:  # an admin route without the admin token
            mnemo.pause()
        assert no_admin.value.status == 401 and no_admin.value.detail == "missing admin bearer token"
    with Client(url, token="wrong") as stranger, pytest.raises(AuthError) as refused_auth:
        stranger.predict([ROWS[0]])
    assert refused_auth.value.status == 401 and refused_auth.value.detail == "invalid bearer token"


def test_reads_weights_and_every_admin_route(url: str, tmp_path: Path) -> None:
    with Client(url, token=TOKEN, admin_token=ADMIN) as mnemo:
        page = mnemo.versions(limit=5)
        assert page.current is not None and page.versions[-1].version <= page.current
        assert mnemo.version(0).version == 0 and mnemo.version(0).raw["version"] == 0
        blob = mnemo.weights(0, tmp_path / "v0.safetensors")
        assert (tmp_path / "v0.safetensors").read_bytes() == blob and load_safetensors(blob)
        stats = mnemo.stats()
        assert stats.model_version == page.current and "prediction_log" in stats.raw
        assert isinstance(mnemo.stats_history(limit=5), list) and mnemo.ready()

        golden = [{"inputs": ROWS[0], "label": "setosa"}, WithInputs(ROWS[1], "virginica", tag="g")]
        assert (mnemo.add_golden(golden).added, mnemo.add_golden(golden).added) == (2, 0)
        assert mnemo.pause() == "paused" and mnemo.stats().learning == "paused"
        assert mnemo.resume() == "running"
        activation = mnemo.activate(0)
        assert activation.current == 0 and activation.epoch >= 1
        # The learner finishes a purge; it has reported once it is running.
        wait_for(lambda: mnemo.stats().learning, 60, "the learner")
        purge = mnemo.purge("client-nothing")
        assert purge.done and purge.tag == "client-nothing"
        assert mnemo.purge_status(purge.purge_id) == purge
        with pytest.raises(ValueError, match="exactly one"):
            mnemo.purge("t", all=True)


# -- the retry policy, on scripted answers ------------------------------------------------


Script = list[httpx.Response | Exception]


def scripted(script: Script, seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step
    return handle


def busy(status: int, seconds: str = "0.1") -> httpx.Response:
    return httpx.Response(status, json={"detail": f"busy {status}"}, headers={"Retry-After": seconds})


def accepted() -> httpx.Response:
    return httpx.Response(202, json={"accepted": 1, "duplicates": 0})


def test_503_and_429_are_retried_after_retry_after_with_the_same_ids() -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(base_url="http://mnemo", transport=httpx.MockTransport(
        scripted([busy(503), busy(429), httpx.ConnectError("refused"), accepted()], seen)))
    with Client(http=http, backoff=0.01) as mnemo:
        began = time.monotonic()
        result = mnemo.feedback([WithInputs([1.0], "a")])
    assert time.monotonic() - began >= 0.2  # Retry-After: 0.1, twice
    assert (result.accepted, result.attempts) == (1, 4)
    assert len({r.content for r in seen}) == 1 and b'"feedback_id":"' in seen[0].content


def test_retries_end_with_the_last_refusal_or_at_the_deadline() -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(base_url="http://mnemo", transport=httpx.MockTransport(
        scripted([busy(503), busy(503)], seen)))
    with Client(http=http, retries=1) as mnemo, pytest.raises(UnavailableError) as gave_up:
        mnemo.stats()
    assert (gave_up.value.status, gave_up.value.detail, gave_up.value.retry_after) == (503, "busy 503", 0.1)
    assert len(seen) == 2

    seen.clear()
    http = httpx.Client(base_url="http://mnemo", transport=httpx.MockTransport(
        scripted([busy(429, "30")], seen)))
    began = time.monotonic()
    with Client(http=http, deadline=5) as mnemo, pytest.raises(UnavailableError):
        mnemo.predict([[1.0]])  # waiting 30 s would pass the deadline: give up now
    assert time.monotonic() - began < 1 and len(seen) == 1

    http = httpx.Client(base_url="http://mnemo", transport=httpx.MockTransport(
        scripted([httpx.ConnectError("refused")] * 3, seen)))
    with Client(http=http, retries=2, backoff=0.001) as mnemo, pytest.raises(ConnectionFailedError) as lost:
        mnemo.stats()
    assert lost.value.status is None and "3 attempt(s)" in str(lost.value)


@pytest.mark.parametrize(("status", "kind"), [
    (401, AuthError), (403, AuthError), (404, NotFoundError), (409, ConflictError),
    (413, PayloadTooLargeError), (500, MnemoError)])
def test_other_refusals_raise_at_once(status: int, kind: type[MnemoError]) -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(base_url="http://mnemo", transport=httpx.MockTransport(
        scripted([httpx.Response(status, json={"detail": "no"})], seen)))
    with Client(http=http) as mnemo, pytest.raises(kind) as refused:
        mnemo.activate(3)
    assert type(refused.value) is kind and refused.value.status == status and len(seen) == 1
    assert str(refused.value).startswith(f"{status} ") and refused.value.detail == "no"


async def test_async_client_retries_on_the_same_policy() -> None:
    seen: list[httpx.Request] = []
    http = httpx.AsyncClient(base_url="http://mnemo", transport=httpx.MockTransport(
        scripted([busy(503), httpx.ReadError("reset"), accepted()], seen)))
    async with AsyncClient(http=http, admin_token="a", backoff=0.01) as mnemo:
        result = await mnemo.feedback([{"inputs": [1.0], "label": 2}])
    assert result.attempts == 3 and seen[0].content == seen[2].content
    await http.aclose()


def test_feedback_ids_are_kept_or_given() -> None:
    items = with_feedback_ids([WithInputs([1.0], "a", feedback_id="mine"), {"inputs": [2.0], "label": 1},
                               ByPrediction("p-1", "b", tag="t")])
    assert items[0] == {"inputs": [1.0], "label": "a", "feedback_id": "mine"}
    assert uuid.UUID(items[1]["feedback_id"]).version == 4
    assert items[2] == {"prediction_id": "p-1", "label": "b", "tag": "t"}  # its id dedupes it
