"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware): request ids and the body limit."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import is_v2
from service.logs import request_id_var

log = logging.getLogger("service.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Every response carries X-Request-ID (the client's when sane, or a new one), and every
    request gets a structured log line: route, status, latency. Successful requests log at
    DEBUG (a line per predict would cost throughput at INFO), failures at INFO/WARNING."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # A random prefix per process and a counter: unique across replicas without a
        # getrandom() system call per request.
        prefix = os.urandom(8).hex()
        self._new_id = (f"{prefix}{n:016x}" for n in itertools.count()).__next__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _VALID_ID.match(given) else self._new_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
            if log.isEnabledFor(level):
                log.log(level, "request", extra={
                    "method": scope["method"], "route": scope["path"], "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                })
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front or by counting the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0
        started = rejected = False

        async def counting_receive() -> Message:
            # Past the limit: answer 413 now and tell the app the client left, so it stops
            # reading (an exception here would be turned into a 400 by the body parser).
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    rejected = True
                    await self._reject(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes (MNEMO_MAX_BODY_BYTES)"
        key = "error" if is_v2(scope["path"]) else "detail"  # the Open Inference Protocol's
        body = json.dumps({key: message}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
