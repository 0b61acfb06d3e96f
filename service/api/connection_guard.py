"""Timeouts and a cap on the API's connections, which uvicorn leaves to file descriptors: a
connection must send a whole request head within `header_timeout` (counted from its opening,
then from the first byte of each later request), a request's whole body within
`body_timeout` of its head, and at most `max_connections` are open at once. Idle keep-alive
connections are uvicorn's own `timeout_keep_alive`.

A fresh connection that sends nothing is closed by the header timer (nginx does the same with
client_header_timeout): keep-alive only starts after a response. A handler that takes its time
is not timed out: no timer runs between a request's last byte and its response.

The request-phase timers hook uvicorn's httptools protocol (its parser callbacks, a private
API). Where those hooks are missing (h11, or a uvicorn that renamed them) the stock protocol
serves with one warning: the cap and the fresh-connection timer stay (they use only asyncio's
Protocol methods), partial heads and bodies are then bounded by nothing but keep-alive.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass

from service.config import Settings

log = logging.getLogger(__name__)

# httptools' parser calls these on the protocol; the phase tracking needs all three.
PARSER_HOOKS = ("on_message_begin", "on_headers_complete", "on_message_complete")
REFUSED_WARNING_EVERY = 10.0  # seconds between warnings while connections are refused

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
           b"content-length: 20\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections")
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
             b"content-length: 15\r\nconnection: close\r\n\r\nrequest timeout")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.header_timeout_seconds, settings.body_timeout_seconds,
                   settings.max_connections)


class _Phase(enum.Enum):
    OPEN = 0  # no request begun yet: the header timer counts from the opening
    HEAD = 1  # a request's head is arriving
    BODY = 2  # its head is in, its body is arriving
    BUSY = 3  # its last byte is in (or the stock protocol tracks it): no timer of ours


def tracks_requests(base: type) -> bool:
    """Whether `base` has the parser hooks the header and body timers rely on."""
    return all(callable(getattr(base, name, None)) for name in PARSER_HOOKS)


class _RefusalLog:
    """A warning when the cap first refuses a connection, then at most one per interval with
    the count since, so a flood costs a log line, not one per socket."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._refused = 0
        self._last = -REFUSED_WARNING_EVERY

    def refused(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._last >= REFUSED_WARNING_EVERY:
            log.warning("refused %d connection(s): %d open, the cap (MNEMO_MAX_CONNECTIONS)",
                        self._refused, self._cap)
            self._refused, self._last = 0, now


class _Guard:
    """The cap and the timers; sits before a uvicorn protocol class in the MRO. The class
    attributes are set per server by guarded_http_protocol."""

    _guard_limits: ConnectionLimits
    _guard_live: set[_Guard]  # this server's open connections
    _guard_refusals: _RefusalLog
    _guard_tracked: bool  # whether the parser hooks below move the phase

    def _guard_over_cap(self) -> bool:
        live, cap = self._guard_live, self._guard_limits.max_connections
        if len(live) < cap:
            return False
        # A protocol that handed its transport on (an upgrade) never hears connection_lost.
        live.difference_update([p for p in live if p._guard_transport.is_closing()])
        return len(live) >= cap

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._guard_transport = transport
        self._guard_refused = self._guard_over_cap()
        if self._guard_refused:  # answered and closed before uvicorn sees it
            self._guard_refusals.refused()
            transport.write(REFUSED)
            transport.close()
            return
        self._guard_live.add(self)
        self._guard_loop = asyncio.get_running_loop()
        self._guard_phase = _Phase.OPEN
        self._guard_since = self._guard_loop.time()
        self._guard_timer: asyncio.TimerHandle | None = None
        self._guard_deadline: float | None = None
        super().connection_made(transport)  # type: ignore[misc]
        # Close through what the protocol writes with (the coalescing wrapper), so a queued
        # write is flushed first.
        self._guard_closer = getattr(self, "transport", None) or transport
        self._guard_rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard_refused:
            return
        self._guard_live.discard(self)
        self._guard_disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if not self._guard_tracked:  # the first byte hands the connection to the stock protocol
            self._guard_phase = _Phase.BUSY
        super().data_received(data)  # type: ignore[misc]
        self._guard_rearm()  # once per read, after the parser's callbacks have run

    def _guard_rearm(self) -> None:
        phase = self._guard_phase
        if phase is _Phase.BUSY or self._guard_transport.is_closing():
            deadline = None
        else:
            limits = self._guard_limits
            allowed = limits.body_timeout if phase is _Phase.BODY else limits.header_timeout
            deadline = self._guard_since + allowed
        if deadline == self._guard_deadline:  # the common case: nothing to re-arm
            return
        self._guard_disarm()
        if deadline is not None:
            self._guard_deadline = deadline
            self._guard_timer = self._guard_loop.call_at(deadline, self._guard_expired)

    def _guard_disarm(self) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
        self._guard_timer = self._guard_deadline = None

    def _guard_expired(self) -> None:
        self._guard_timer = self._guard_deadline = None
        if self._guard_transport.is_closing():
            return
        phase = self._guard_phase
        log.debug("closing a connection: no whole request %s in time", phase.name.lower())
        # A 408 tells a slow but honest client why; not when nothing was sent, nor into the
        # middle of a response. The app's receive() then sees http.disconnect.
        cycle = getattr(self, "cycle", None)
        mid_response = (getattr(cycle, "response_started", False)
                        and not getattr(cycle, "response_complete", True))
        if phase is not _Phase.OPEN and not mid_response:
            self._guard_closer.write(TIMED_OUT)
        self._guard_closer.close()


class _RequestPhases(_Guard):
    """httptools' parser callbacks move the phase; only used where the base has all three
    (a half-present set would leave a phase that never ends, closing good connections)."""

    def on_message_begin(self) -> None:
        if self._guard_phase is not _Phase.OPEN:  # a later request: its own allowance
            self._guard_since = self._guard_loop.time()
        self._guard_phase = _Phase.HEAD
        super().on_message_begin()  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self._guard_phase = _Phase.BODY
        self._guard_since = self._guard_loop.time()
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._guard_phase = _Phase.BUSY
        super().on_message_complete()  # type: ignore[misc]


def guarded_http_protocol(base: type[asyncio.Protocol], limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """`base` (a uvicorn HTTP protocol class, e.g. coalescing_http_protocol()) with the
    timeouts and the cap; one class per server, since the cap counts its connections."""
    tracked = tracks_requests(base)
    if not tracked:
        log.warning("%s lacks the parser hooks %s: serving with the stock protocol, so partial "
                    "request heads and bodies have no timeout (only the connection cap and the "
                    "idle timeouts apply)", base.__name__, ", ".join(PARSER_HOOKS))
    guard = _RequestPhases if tracked else _Guard
    return type(f"Guarded{base.__name__}", (guard, base), {
        "_guard_limits": limits, "_guard_live": set(), "_guard_tracked": tracked,
        "_guard_refusals": _RefusalLog(limits.max_connections)})
