"""The retry policy both transports share: which outcomes are retried, how long to wait, and
when to give up. Kept free of I/O so that the sync and async clients loop the same way."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

import httpx

from mnemo_client._calls import Call
from mnemo_client.errors import ConnectionFailedError, ResponseError, error_from

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first; exponential backoff from `backoff` seconds,
    doubling up to `max_backoff`, with jitter; a server's Retry-After is waited in full.
    No attempt starts after `deadline` seconds from the first (None: no deadline)."""

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    deadline: float | None = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive (or None)")

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds before retry number `retry` (0-based)."""
        if retry_after is not None:
            # Never earlier than asked; a little later at random, so clients shed together
            # do not all come back in the same instant.
            return retry_after * random.uniform(1.0, 1.1)
        return min(self.max_backoff, self.backoff * 2**retry) * random.uniform(0.5, 1.0)


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (both forms: delta-seconds and HTTP-date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    return None


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


class Attempts(Generic[T]):
    """One call's attempts: each outcome yields the result (`Done`), a wait before the next
    attempt (seconds), or an exception once the call must give up."""

    def __init__(self, policy: RetryPolicy, call: Call[T]) -> None:
        self.policy, self.call = policy, call
        self.count = 0
        self.started = time.monotonic()

    def answered(self, response: httpx.Response) -> Done[T] | float:
        self.count += 1
        status = response.status_code
        if status in self.call.answers:
            try:
                return Done(self.call.parse(response, self.count))
            except (ValueError, KeyError, TypeError) as exc:
                raise ResponseError(
                    f"{status} on {self.call.method} {self.call.path}: unexpected answer "
                    f"({type(exc).__name__}: {exc}): {response.text[:200]!r}",
                    status=status, method=self.call.method, path=self.call.path) from exc
        wait = retry_after(response)
        if status in RETRY_STATUSES:
            delay = self._next(wait)
            if delay is not None:
                return delay
        raise error_from(response, wait)

    def failed(self, exc: httpx.TransportError) -> float:
        """No answer: every Mnemo call is safe to send again (module docstring of the client)."""
        self.count += 1
        delay = None if isinstance(exc, httpx.UnsupportedProtocol) else self._next(None)
        if delay is None:
            raise ConnectionFailedError(
                f"no answer to {self.call.method} {self.call.path} after {self.count} "
                f"attempt(s): {type(exc).__name__}: {exc}",
                method=self.call.method, path=self.call.path) from exc
        return delay

    def _next(self, wait: float | None) -> float | None:
        if self.count > self.policy.retries:
            return None
        delay = self.policy.delay(self.count - 1, wait)
        deadline = self.policy.deadline
        if deadline is not None and time.monotonic() + delay - self.started > deadline:
            return None
        return delay

