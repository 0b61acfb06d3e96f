"""Redis that cannot take a request (unreachable, hung, full, read-only) answers 503 with
Retry-After on every route, never 500, and the body says what the client may assume:

- refused at once (no connection, OOM, READONLY): the command was not applied;
- timed out on a write: the outcome is unknown (the server may have received the command and
  run it when it resumed), and every write route is safe to retry (docs/RELIABILITY.md).

Routes with a better answer catch these errors themselves first (predict answers unlogged,
feedback names its store); this handler is the floor for everything else.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.api.errors import is_v2
from service.store.connection import UNAVAILABLE

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def what_to_assume(exc: BaseException, write: bool) -> str:
    """What a client may assume after this error, in one sentence."""
    if isinstance(exc, OutOfMemoryError):
        return "Redis is full (maxmemory reached): the change was not applied; retry later"
    if isinstance(exc, ReadOnlyError):
        return "Redis is read-only (a replica or a failover in progress): the change was " \
               "not applied; retry later"
    if isinstance(exc, RedisTimeoutError) and write:
        return "Redis did not answer in time: the outcome is unknown (it may have been " \
               "applied); retrying is safe"
    return "Redis is unavailable; retry later"


async def redis_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    write = request.method not in _READS
    message = what_to_assume(exc, write)
    # One line, no traceback and no request body: the cause is the server, not this code.
    log.warning("redis unavailable", extra={
        "route": request.url.path, "method": request.method, "error": type(exc).__name__,
    })
    key = "error" if is_v2(request.url.path) else "detail"
    return JSONResponse({key: message}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def unavailable_error_types() -> tuple[type[Exception], ...]:
    """The classes the handler is registered for: redis-py's (UNAVAILABLE less the builtin
    OSError, which a route reading a file may raise for its own reasons)."""
    return tuple(t for t in UNAVAILABLE if t is not OSError)
