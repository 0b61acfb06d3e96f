"""The learner's /metrics (serve_metrics, a real server on a free loopback port): behind
MNEMO_API_TOKEN when it is set, since the per-tag series name tags that /v1/stats only shows
with the token; open without one, like every /v1 route. Port 0 serves nothing, a port already
taken costs the metrics and not the learner, a stalled client does not hold other scrapes, and
scrapes are not logged."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.monitor.learner_metrics import LearnerMetrics
from service.monitor.metrics_server import MetricsServer
from service.worker.process import serve_metrics
from tests.conftest import free_port

TOKEN = "learner-metrics-token"
MODEL = "auth-test"
TAG = "customer-42"

Serve = Callable[[str | None], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts serve_metrics with a per-tag series on a free port; returns the /metrics URL."""
    servers: list[MetricsServer] = []

    def start(token: str | None) -> str:
        registry = CollectorRegistry()
        LearnerMetrics(registry, MODEL).tag_accuracy.labels(model=MODEL, tag=TAG).set(0.75)
        server = serve_metrics(Settings(learner_metrics_port=free_port(), api_token=token,
                                        model_name=MODEL), registry)
        assert server is not None
        servers.append(server)
        return f"http://127.0.0.1:{server.port}/metrics"

    yield start
    for server in servers:
        server.stop()


def tag_accuracy(response: httpx.Response) -> dict[str, float]:
    assert response.status_code == 200, response.text
    (family,) = [f for f in text_string_to_metric_families(response.text) if f.name == "mnemo_accuracy"]
    return {s.labels["tag"]: s.value for s in family.samples}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_with_a_token_configured_the_metrics_need_it(serve: Serve) -> None:
    url = serve(TOKEN)
    refused = [httpx.get(url, timeout=5), httpx.get(url, headers=bearer("wrong"), timeout=5),
               httpx.get(url, headers=bearer(TOKEN + "x"), timeout=5),
               httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"}, timeout=5),
               httpx.get(url, headers={"Authorization": "Bearer"}, timeout=5)]
    for response in refused:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert TAG not in response.text and "mnemo_" not in response.text
    assert "missing" in refused[0].text and "invalid" in refused[1].text
    assert tag_accuracy(httpx.get(url, headers=bearer(TOKEN), timeout=5)) == {TAG: 0.75}
    # The scheme is case-insensitive, as on the API's /v1 routes.
    lower = httpx.get(url, headers={"Authorization": f"bearer {TOKEN}"}, timeout=5)
    assert tag_accuracy(lower) == {TAG: 0.75}


def test_without_a_token_the_metrics_are_open(serve: Serve) -> None:
    url = serve(None)
    assert tag_accuracy(httpx.get(url, timeout=5)) == {TAG: 0.75}
    assert tag_accuracy(httpx.get(url, headers=bearer("anything"), timeout=5)) == {TAG: 0.75}


def test_port_zero_serves_nothing() -> None:
    before = {t.name for t in threading.enumerate()}
    assert serve_metrics(Settings(learner_metrics_port=0, api_token=TOKEN), CollectorRegistry()) is None
    assert "learner-metrics" not in {t.name for t in threading.enumerate()} - before


def test_a_port_already_taken_is_logged_and_the_learner_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="service.worker.process"):
            server = serve_metrics(Settings(learner_metrics_port=port), CollectorRegistry())
    assert server is None
    assert f"learner metrics not served on 127.0.0.1:{port}" in caplog.text


def test_a_stalled_client_does_not_hold_other_scrapes_and_scrapes_are_not_logged(
        serve: Serve, capfd: pytest.CaptureFixture[str]) -> None:
    url = serve(TOKEN)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as stalled:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
        assert tag_accuracy(httpx.get(url, headers=bearer(TOKEN), timeout=2)) == {TAG: 0.75}
    assert httpx.get(url, timeout=5).status_code == 401
    out, err = capfd.readouterr()
    assert "GET /metrics" not in out + err
