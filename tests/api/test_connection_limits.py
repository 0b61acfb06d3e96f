"""Connection timeouts and the cap (issue 18), on a real uvicorn server configured the way
`serve` configures it, over loopback sockets: idle, partial-head, short-body and slowloris
connections are closed within their timeouts, honest keep-alive clients and slow handlers are
not, the connection past the cap is refused at once, and the fallback protocol (no parser
hooks) still serves with its idle timeouts."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from service.api.connection_guard import ConnectionLimits, guarded_http_protocol, tracks_requests
from service.api.write_coalescing import coalescing_http_protocol
from service.cli import uvicorn_config
from service.config import Settings
from tests.conftest import free_port

MARGIN = 1.5  # seconds past a timeout the close may take on a loaded machine
SHORT = {"header_timeout_seconds": 0.5, "body_timeout_seconds": 0.5, "keep_alive_seconds": 0.5}


class App:
    """Echoes the body's length; /slow answers after a pause; records disconnects."""

    def __init__(self) -> None:
        self.disconnects: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects.append(scope["path"])
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(float(scope["query_string"] or 0))
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., tuple[int, App]]]:
    """Starts `serve`'s uvicorn config (optionally with another protocol class) in a thread;
    every server started is stopped at teardown."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(http: Callable[[ConnectionLimits], type] | None = None, **overrides: Any) -> tuple[int, App]:
        settings = make_settings(host="127.0.0.1", port=free_port(), **overrides)
        app = App()
        config = uvicorn_config(settings, app)
        config.lifespan = "off"
        if http is not None:
            config.http = http(ConnectionLimits.from_settings(settings))
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        _until(lambda: server.started, 10, "the server to start")
        return settings.port, app

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)


def _until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _h11(limits: ConnectionLimits) -> type:
    return guarded_http_protocol(coalescing_http_protocol("h11"), limits)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _wait_closed(sock: socket.socket, started: float, limit: float) -> tuple[float, bytes]:
    """Reads until the server closes (EOF or reset): seconds since `started`, bytes read.
    Fails if the socket is still open `limit` seconds after `started`."""
    data = b""
    while True:
        left = started + limit - time.monotonic()
        assert left > 0, f"still open after {limit:.1f} s (read {data!r})"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            continue  # the assertion above ends it
        if not chunk:
            return time.monotonic() - started, data
        data += chunk


def _request(sock: socket.socket, head: bytes, body: bytes = b"") -> bytes:
    """One keep-alive exchange: the response (all of it, by its content-length)."""
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    return data


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _post(path: str, size: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode()


def test_the_serve_config_has_the_guard_and_the_settings() -> None:
    settings = Settings(redis_url="redis://x", input_dim=4, labels=["a", "b"],
                        keep_alive_seconds=7.5)
    config = uvicorn_config(settings, App())
    assert config.timeout_keep_alive == 7.5 and config.limit_concurrency is None
    assert config.http.__name__ == "GuardedCoalescingHttpToolsProtocol"  # type: ignore[union-attr]
    assert tracks_requests(coalescing_http_protocol())  # the pinned uvicorn has the hooks


@pytest.mark.parametrize("send", [b"", b"GET / HTTP/1.1\r\nHost: t\r\nX-Partial: "],
                         ids=["idle", "partial-head"])
def test_a_head_not_sent_in_time_is_closed(serve: Callable[..., tuple[int, App]], send: bytes) -> None:
    port, _ = serve(**{**SHORT, "keep_alive_seconds": 30})  # the header timer, not keep-alive
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(send)
        elapsed, data = _wait_closed(sock, started, 0.5 + MARGIN)
    assert elapsed >= 0.45
    # 408 once the client began a request; an idle socket is just closed.
    assert data == b"" if not send else data.startswith(b"HTTP/1.1 408 ")


def test_slowloris_is_closed_at_the_header_timeout(serve: Callable[..., tuple[int, App]]) -> None:
    port, _ = serve(**SHORT)
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
    with _connect(port) as sock:
        started = time.monotonic()
        sent, closed = 0, False
        while not closed:  # a byte every 0.1 s: each one arrives well within any idle timeout
            assert time.monotonic() - started < 0.5 + MARGIN, f"still open after {sent} bytes"
            try:
                sock.sendall(head[sent:sent + 1])
                sent += 1
                sock.settimeout(0.1)
                closed = sock.recv(65536) == b"" or closed
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
    assert sent >= 3 and time.monotonic() - started >= 0.45


def test_a_body_not_sent_in_time_closes_and_the_app_sees_a_disconnect(
        serve: Callable[..., tuple[int, App]]) -> None:
    port, app = serve(**{**SHORT, "header_timeout_seconds": 30, "keep_alive_seconds": 30})
    with _connect(port) as sock:
        sock.sendall(_post("/upload", 100_000) + b"x" * 10)
        started = time.monotonic()
        elapsed, data = _wait_closed(sock, started, 0.5 + MARGIN)
    assert elapsed >= 0.4 and data.startswith(b"HTTP/1.1 408 ")
    _until(lambda: app.disconnects == ["/upload"], 5, "the app to see the disconnect")


def test_honest_keep_alive_clients_and_slow_handlers_are_not_cut(
        serve: Callable[..., tuple[int, App]]) -> None:
    timeouts = {"header_timeout_seconds": 0.8, "body_timeout_seconds": 0.8, "keep_alive_seconds": 0.8}
    port, app = serve(**timeouts)
    with _connect(port) as sock:
        assert _request(sock, GET).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.6)  # idle under keep-alive
        head = _post("/", 6)
        # A head, then a body, each in two parts within its own allowance, though the head
        # ends 1.1 s after the first request's: the header timer restarts with each request.
        sock.sendall(head[:10])
        time.sleep(0.5)
        sock.sendall(head[10:] + b"abc")
        time.sleep(0.5)
        assert _request(sock, b"", b"def").endswith(b"\r\n\r\n6")
        # A handler slower than both request timeouts: no timer runs while the app works.
        assert _request(sock, _post("/slow?1.0", 0)).startswith(b"HTTP/1.1 200 ")
        assert _request(sock, GET).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        elapsed, data = _wait_closed(sock, started, 0.8 + MARGIN)  # then keep-alive ends it
    # The client starts its clock a little after the server's, hence the slack below.
    assert elapsed >= 0.5 and data == b"" and app.disconnects == []


@pytest.mark.parametrize("http", [None, _h11], ids=["httptools", "fallback-h11"])
def test_the_connection_past_the_cap_is_refused_at_once(
        serve: Callable[..., tuple[int, App]], http: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="service.api.connection_guard")
    port, _ = serve(http, max_connections=2, header_timeout_seconds=30, keep_alive_seconds=30)
    with _connect(port) as first, _connect(port) as second:
        assert _request(first, GET).startswith(b"HTTP/1.1 200 ")  # both accepted and counted
        assert _request(second, GET).startswith(b"HTTP/1.1 200 ")
        with _connect(port) as third:
            _, data = _wait_closed(third, time.monotonic(), 1.0)  # at once, not at a timeout
        assert data.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in data
        assert _request(first, GET).startswith(b"HTTP/1.1 200 ")  # the first ones still served
        assert _request(second, GET).startswith(b"HTTP/1.1 200 ")
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        "refused 1 connection(s): 2 open, the cap (MNEMO_MAX_CONNECTIONS)"]
    _until(_served_anew(port), 5, "a new connection to be served once the first two closed")


def _served_anew(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with _connect(port) as sock:
            sock.sendall(GET)
            return sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    return check


def test_the_fallback_protocol_serves_with_its_idle_timeouts(
        serve: Callable[..., tuple[int, App]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="service.api.connection_guard")
    assert not tracks_requests(coalescing_http_protocol("h11"))
    port, _ = serve(_h11, **SHORT)
    warnings = [r.getMessage() for r in caplog.records if "parser hooks" in r.getMessage()]
    assert len(warnings) == 1 and "no timeout" in warnings[0]
    with _connect(port) as sock:
        for _ in range(3):
            assert _request(sock, GET).startswith(b"HTTP/1.1 200 ")
        assert _request(sock, _post("/", 3), b"abc").endswith(b"\r\n\r\n3")
        started = time.monotonic()
        elapsed, data = _wait_closed(sock, started, 0.5 + MARGIN)  # uvicorn's keep-alive
    assert elapsed >= 0.3 and data == b""  # (its clock starts a little before ours)
    with _connect(port) as idle:  # and a fresh socket that sends nothing: the header timer
        elapsed, data = _wait_closed(idle, time.monotonic(), 0.5 + MARGIN)
    assert elapsed >= 0.45 and data == b""
