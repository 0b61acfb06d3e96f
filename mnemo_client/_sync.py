"""The blocking client."""

from __future__ import annotations

import time
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


class Client(ClientBase):
    """A Mnemo API client (blocking; `AsyncClient` has the same methods as coroutines).

    `base_url` defaults to http://127.0.0.1:8000; `token` is MNEMO_API_TOKEN (every /v1
    route), `admin_token` MNEMO_ADMIN_TOKEN (activate, golden, pause/resume, purge).
    `timeout` bounds each attempt (seconds). Pass `http` (an httpx.Client with its own
    base_url) to send through it instead, e.g. with a custom transport; it is not closed.
    `model` names one model of a deployment that serves several (MNEMO_MODELS): every /v1
    call goes to /v1/models/{model}/…; None: the deployment's default model.

    Retries: every call is retried on 429 and 503 (waiting the server's Retry-After in full,
    else exponential backoff from `backoff` seconds up to `max_backoff`, with jitter) and on
    connection errors, at most `retries` times and never starting an attempt `deadline`
    seconds after the first (None: no deadline). That is safe for every call, writes
    included (docs/RELIABILITY.md): reads change nothing; feedback is deduplicated by
    prediction id and by `feedback_id`, which the client gives every item with inputs that
    has none; golden adds only new items; pause, resume, activate and purge are idempotent;
    a retried predict logs its rows again (client `ids` are overwritten with the same
    inputs, server ids of a lost answer expire unused). Then it raises `UnavailableError`
    (429/503) or `ConnectionFailedError` (no answer); other refusals raise at once
    (`AuthError`, `NotFoundError`, `ConflictError`, `PayloadTooLargeError`,
    `ValidationError`, else `MnemoError`), each with the server's `detail`.
    """

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 admin_token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, deadline: float | None = 60.0,
                 http: httpx.Client | None = None,
                 model: str | None = None) -> None:
        super().__init__(base_url, http, token=token, admin_token=admin_token, retries=retries,
                         backoff=backoff, max_backoff=max_backoff, deadline=deadline,
                         model=model)
        self._http = http if http is not None else httpx.Client(base_url=self.base_url,
                                                                timeout=timeout)

    def _run(self, call: calls.Call[T]) -> T:
        attempts = Attempts(self.policy, call)
        while True:
            try:
                response = self._http.send(self._request(self._http, call))
            except httpx.TransportError as exc:
                delay = attempts.failed(exc)
            else:
                step = attempts.answered(response)
                if isinstance(step, Done):
                    return step.value
                delay = step
            time.sleep(delay)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- /v1 -------------------------------------------------------------------------------

    def predict(self, inputs: Sequence[Sequence[float]] | Any, *, tag: str | None = None,
                ids: Sequence[str] | None = None) -> Predictions:
        """Predict rows (a list of lists or a 2-D numpy array; records, i.e. dicts, where the
        deployment has a feature schema, MNEMO_FEATURES). `tag` routes per-tag heads and
        tags the logged rows; `ids` are your own prediction ids, one per row."""
        return self._run(calls.predict(inputs, tag, ids))

    def feedback(self, items: Iterable[FeedbackItem]) -> FeedbackResult:
        """Send true labels: `ByPrediction(prediction_id, label)` or `WithInputs(inputs, label)`
        (or the same as dicts). Items with inputs and no `feedback_id` get a uuid4 one, so a
        retry is counted once; use `with_feedback_ids` first to keep the ids yourself."""
        return self._run(calls.feedback(items))

    def versions(self, *, limit: int = 50, before: str | int | None = None) -> VersionPage:
        """A page of the registry, newest first; `before=page.next` for the next one."""
        return self._run(calls.versions(limit, before))

    def version(self, version: int | None = None) -> Version:
        """One version's metadata; None: the current one."""
        return self._run(calls.version(version))

    def weights(self, version: int, path: str | Path | None = None) -> bytes:
        """A version's weights as safetensors bytes, also written to `path` when given."""
        return self._run(calls.weights(version, path))

    def stats(self) -> Stats:
        return self._run(calls.stats())

    def stats_history(self, limit: int = 500) -> list[dict[str, Any]]:
        """The learner's statistics over time, oldest first (raw entries)."""
        return self._run(calls.stats_history(limit))

    def ready(self) -> bool:
        """Whether the API serves a version (/readyz); not retried."""
        return self._run(calls.ready())

    # -- admin -----------------------------------------------------------------------------

    def activate(self, version: int) -> Activation:
        """Make `version` current on every replica (rollback or forward)."""
        return self._run(calls.activate(version))

    def add_golden(self, items: Iterable[WithInputs | Mapping[str, Any]]) -> GoldenResult:
        """Trusted labelled items the publish gate checks; repeats are not added again."""
        return self._run(calls.add_golden(items))

    def pause(self) -> str:
        """Stop training (feedback is still accepted); returns "paused"."""
        return self._run(calls.learning("pause"))

    def resume(self) -> str:
        """Restart training; returns "running"."""
        return self._run(calls.learning("resume"))

    def purge(self, tag: str | None = None, *, all: bool = False, golden: bool = False) -> PurgeStatus:
        """Delete raw inputs of `tag` (or `all=True`: every one), the golden set's too with
        `golden=True`. `status` "pending" (the learner is busy): poll `purge_status`."""
        return self._run(calls.purge(tag, all, golden))

    def purge_status(self, purge_id: str) -> PurgeStatus:
        return self._run(calls.purge_status(purge_id))
