"""The API as a real process: an accepted item survives SIGKILL of the API and of the Redis
server (MNEMO_DURABILITY=strict, embedded Valkey with AOF), SIGTERM drains in-flight requests,
and strict durability refuses a server that cannot confirm AOF writes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from service.config import Settings
from service.embedded import EmbeddedRedis
from service.store.connection import StoreError
from service.store.keys import Keys
from tests.conftest import REDIS_URL, free_port, running_app
from tests.reliability.cluster import RedisServer
from tests.reliability.test_redis_restart import redis_knows_waitaof

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["setosa", "versicolor", "virginica"]


@contextlib.contextmanager
def serve_process(
    tmp_path: Path, redis_url: str, model: str, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m service serve` on a free port, ready (readyz 200) when yielded."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    clean.update(MNEMO_REDIS_URL=redis_url, MNEMO_PORT=str(port), MNEMO_MODEL_NAME=model,
                 MNEMO_INPUT_DIM="4", MNEMO_LABELS=",".join(LABELS), **env)
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=ROOT, env=clean,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"serve not ready:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _items(batch: int, size: int) -> list[dict[str, object]]:
    return [{"inputs": [float(batch), float(i), 0.5, -1.25], "label": LABELS[(batch + i) % 3],
             "feedback_id": f"b{batch}-{i}"} for i in range(size)]


def test_accepted_items_survive_sigkill_of_api_and_redis(tmp_path: Path) -> None:
    model = "durable"
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    accepted: dict[str, tuple[list[float], str]] = {}
    try:
        with serve_process(tmp_path, url, model, MNEMO_DURABILITY="strict") as (api, port), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            predicted = http.post("/v1/predict", json={"inputs": [[9.0, 9.0, 9.0, 9.0]], "ids": ["p-1"]})
            assert predicted.status_code == 200 and predicted.json()["logged"] is True
            by_id = http.post("/v1/feedback", json={"items": [{"prediction_id": "p-1", "label": "virginica"}]})
            assert by_id.status_code == 202, by_id.text
            accepted["p:p-1"] = ([9.0, 9.0, 9.0, 9.0], "virginica")
            for batch in range(20):
                items = _items(batch, 10)
                response = http.post("/v1/feedback", json={"items": items})
                assert response.status_code == 202, response.text
                assert response.json() == {"accepted": 10, "duplicates": 0}
                for item in items:
                    accepted[f"f:{item['feedback_id']}"] = (item["inputs"], item["label"])  # type: ignore[assignment]
            # No clean shutdown for either process.
            os.kill(api.pid, signal.SIGKILL)
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            api.wait(10)
    finally:
        server.stop()  # reaps the killed child and frees the data directory
    with EmbeddedRedis(tmp_path) as again:
        client = redis.Redis.from_url(again.url)
        try:
            entries = client.xrange(Keys(model).stream)
            assert int(client.hget(Keys(model).counters, "accepted")) == len(accepted) == 201
        finally:
            client.close()
    stored = {fields[b"id"].decode(): fields for _, fields in entries}
    assert len(entries) == len(stored) == len(accepted)
    for dedupe_id, (row, label) in accepted.items():
        fields = stored[dedupe_id]
        assert fields[b"y"].decode() == label
        np.testing.assert_array_equal(np.frombuffer(fields[b"x"], "<f4"), np.asarray(row, np.float32))
    assert stored["p:p-1"][b"v"] == b"0"


def _read_response(sock: socket.socket, buffer: bytes = b"") -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 response (status, head, body) with a Content-Length body; the rest stays."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return status, head, rest[:length]


def _begin(port: int, path: str, body: bytes) -> socket.socket:
    """Send the headers only, with Expect: 100-continue; the interim 100 proves the app is
    already running this request (waiting for its body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: mnemo\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    status, _, _ = _read_response(sock)
    assert status == 100
    return sock


def test_sigterm_drains_in_flight_requests(tmp_path: Path, model_name: str,
                                           redis_client: redis.Redis) -> None:
    bodies = [
        ("/v1/predict", b'{"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}', 200),
        ("/v1/feedback", b'{"items": [{"inputs": [1, 2, 3, 4], "label": "setosa"}]}', 202),
        ("/v1/predict", b'{"inputs": [[0, 0, 0, 0]]}', 200),
    ]
    with serve_process(tmp_path, REDIS_URL, model_name) as (api, port):
        in_flight = [(_begin(port, path, body), body, status) for path, body, status in bodies]
        try:
            api.send_signal(signal.SIGTERM)
            # It stops accepting new connections while the three are still open...
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except ConnectionRefusedError:
                    break
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.05)
            # ...and keeps waiting for them: hold the bodies back well past uvicorn's 0.1 s
            # settle time (the drain allows 10 s), then finish the requests.
            time.sleep(1.5)
            assert api.poll() is None
            for sock, body, expected in in_flight:
                sock.sendall(body)
                status, _, payload = _read_response(sock)
                assert status == expected, payload
        finally:
            for sock, _, _ in in_flight:
                sock.close()
        assert api.wait(20) == 0
    stream = redis_client.xrange(Keys(model_name).stream)
    assert len(stream) == 1 and stream[0][1][b"y"] == b"setosa"


async def test_strict_durability_refuses_a_server_without_waitaof(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A server without WAITAOF (Redis 7.0, or a newer one with it renamed away): strict mode
    must not start (it would answer 500 after appending every batch)."""
    without = ("--rename-command", "WAITAOF", "") if redis_knows_waitaof() else ()
    with RedisServer(tmp_path / "redis", *without) as server, server.client() as direct:
        with pytest.raises(StoreError, match="MNEMO_DURABILITY=strict"):
            async with running_app(make_settings(redis_url=server.url, durability="strict")):
                pass
        assert direct.dbsize() == 0


async def test_strict_durability_refuses_appendonly_off(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with EmbeddedRedis(tmp_path) as server:
        direct = redis.Redis.from_url(server.url)
        try:
            direct.config_set("appendonly", "no")
            with pytest.raises(StoreError, match="MNEMO_DURABILITY=strict"):
                async with running_app(make_settings(redis_url=server.url, durability="strict")):
                    pass
            assert direct.dbsize() == 0
            direct.config_set("appendonly", "yes")
            async with running_app(make_settings(redis_url=server.url, durability="strict")) as c:
                response = await c.post("/v1/feedback", json={"items": _items(0, 3)})
                assert response.status_code == 202, response.text
                # AOF switched off under a running strict API: 503, never a 500.
                direct.config_set("appendonly", "no")
                refused = await c.post("/v1/feedback", json={"items": _items(1, 1)})
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
        finally:
            direct.close()
