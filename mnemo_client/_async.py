"""The asyncio client: Client's methods as coroutines, over the same calls and retry policy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from mnemo_client import _calls as calls
from mnemo_client._base import ClientBase
from mnemo_client._retry import Attempts, Done
from mnemo_client.models import (
    Activation,
    FeedbackItem,
    FeedbackResult,
    GoldenResult,
    Predictions,
    PurgeStatus,
    Stats,
    Version,
    VersionPage,
    WithInputs,
)

T = TypeVar("T")


class AsyncClient(ClientBase):
    """`Client` for asyncio: the same arguments (`http` is an httpx.AsyncClient here), the
    same retries and exceptions, every method a coroutine. `async with AsyncClient(...)`."""

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 admin_token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, deadline: float | None = 60.0,
                 http: httpx.AsyncClient | None = None,
                 model: str | None = None) -> None:
        super().__init__(base_url, http, token=token, admin_token=admin_token, retries=retries,
                         backoff=backoff, max_backoff=max_backoff, deadline=deadline,
                         model=model)
        self._http = http if http is not None else httpx.AsyncClient(base_url=self.base_url,
                                                                     timeout=timeout)

    async def _run(self, call: calls.Call[T]) -> T:
        attempts = Attempts(self.policy, call)
        while True:
            try:
                response = await self._http.send(self._request(self._http, call))
            except httpx.TransportError as exc:
                delay = attempts.failed(exc)
            else:
                step = attempts.answered(response)
                if isinstance(step, Done):
                    return step.value
                delay = step
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # One line each: the docstrings are Client's.

    async def predict(self, inputs: Sequence[Sequence[float]] | Any, *, tag: str | None = None,
                      ids: Sequence[str] | None = None) -> Predictions:
        return await self._run(calls.predict(inputs, tag, ids))

    async def feedback(self, items: Iterable[FeedbackItem]) -> FeedbackResult:
        return await self._run(calls.feedback(items))

    async def versions(self, *, limit: int = 50, before: str | int | None = None) -> VersionPage:
        return await self._run(calls.versions(limit, before))

    async def version(self, version: int | None = None) -> Version:
        return await self._run(calls.version(version))

    async def weights(self, version: int, path: str | Path | None = None) -> bytes:
        return await self._run(calls.weights(version, path))

    async def stats(self) -> Stats:
        return await self._run(calls.stats())

    async def stats_history(self, limit: int = 500) -> list[dict[str, Any]]:
        return await self._run(calls.stats_history(limit))

    async def ready(self) -> bool:
        return await self._run(calls.ready())

    async def activate(self, version: int) -> Activation:
        return await self._run(calls.activate(version))

    async def add_golden(self, items: Iterable[WithInputs | Mapping[str, Any]]) -> GoldenResult:
        return await self._run(calls.add_golden(items))

    async def pause(self) -> str:
        return await self._run(calls.learning("pause"))

    async def resume(self) -> str:
        return await self._run(calls.learning("resume"))

    async def purge(self, tag: str | None = None, *, all: bool = False,
                    golden: bool = False) -> PurgeStatus:
        return await self._run(calls.purge(tag, all, golden))

    async def purge_status(self, purge_id: str) -> PurgeStatus:
        return await self._run(calls.purge_status(purge_id))
