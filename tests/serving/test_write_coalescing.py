"""Write coalescing on a real uvicorn server and real sockets: a response's head and body leave
in one send (so one read gets all of it), keep-alive and close both deliver every byte, and a
streamed body still arrives whole."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from service.api.write_coalescing import FLUSH_AT, CoalescingTransport, coalescing_http_protocol
from tests.conftest import free_port

BODY = b'{"predictions": [' + b"0.1, " * 200 + b"0.1]}"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await receive()
    if scope["path"] == "/stream":  # three chunks, the last after a pause
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for chunk, more in ((b"one,", True), (b"two,", True)):
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"three", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    chosen = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=chosen, log_config=None,
                            lifespan="off", http=coalescing_http_protocol("h11"))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield chosen
    server.should_exit = True
    await task


def _request(path: str, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


async def test_head_and_body_arrive_in_one_read(port: int) -> None:
    def exchange() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            reads = []
            for _ in range(3):  # keep-alive: each response is one segment
                sock.sendall(_request("/"))
                reads.append(sock.recv(65536))  # blocks until the first segment arrives
            return reads

    for read in await asyncio.to_thread(exchange):
        head, _, body = read.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == BODY


async def test_close_and_streaming_deliver_every_byte(port: int) -> None:
    def fetch(path: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(_request(path, close=True))
            return _read_all(sock)  # to EOF: the queued bytes go out before the close

    whole = await asyncio.to_thread(fetch, "/")
    assert whole.endswith(b"\r\n\r\n" + BODY) and b"connection: close" in whole.lower()
    streamed = await asyncio.to_thread(fetch, "/stream")
    head, _, chunked = streamed.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert chunked == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"


async def test_the_queue_goes_out_in_order_once_per_loop_turn() -> None:
    loop = asyncio.get_running_loop()
    received = bytearray()
    got_eof = asyncio.Event()

    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.extend(data)

        def eof_received(self) -> None:
            got_eof.set()

    server_sock, client_sock = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_sock)
    await loop.connect_accepted_socket(Sink, client_sock)
    wrapped = CoalescingTransport(transport)  # type: ignore[arg-type]
    wrapped.write(b"a")
    wrapped.writelines([b"b", b"", bytearray(b"c")])
    assert wrapped.get_write_buffer_size() == 3 and received == b""
    await asyncio.sleep(0)  # the end of this loop turn
    assert received == b"abc" or await _until(lambda: received == b"abc")
    big = b"x" * FLUSH_AT
    wrapped.write(big)  # a large write goes out at once, in order
    assert wrapped.get_write_buffer_size() < FLUSH_AT
    wrapped.write(b"d")
    wrapped.close()  # flushes what is queued, then closes
    await asyncio.wait_for(got_eof.wait(), 5)
    assert bytes(received) == b"abc" + big + b"d" and wrapped.is_closing()


async def _until(check: Callable[[], bool]) -> bool:
    for _ in range(1000):
        await asyncio.sleep(0.001)
        if check():
            return True
    return False
