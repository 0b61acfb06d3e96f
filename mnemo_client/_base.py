"""What the sync and async clients share besides the calls: settings, tokens, requests."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from mnemo_client._calls import Call
from mnemo_client._retry import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientBase:
    """Settings common to Client and AsyncClient (their docstrings say what each means)."""

    def __init__(self, base_url: str | None, http: object | None, *, token: str | None,
                 admin_token: str | None, retries: int, backoff: float, max_backoff: float,
                 deadline: float | None, model: str | None = None) -> None:
        if http is not None and base_url is not None:
            raise ValueError("give base_url or an http client (which has its own), not both")
        self.base_url = base_url or DEFAULT_URL
        self.policy = RetryPolicy(retries, backoff, max_backoff, deadline)
        self._auth = {False: _bearer(token), True: _bearer(admin_token)}
        self._owns_http = http is None
        # One model of a deployment that serves several (MNEMO_MODELS): its /v1 routes.
        self.model = model
        self._prefix = f"/v1/models/{quote(model, safe='')}/" if model else "/v1/"

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        headers = {"Content-Type": "application/json"} if call.body is not None else {}
        auth = self._auth[call.admin]
        if auth:
            headers["Authorization"] = auth
        path = self._prefix + call.path.removeprefix("/v1/") \
            if call.path.startswith("/v1/") else call.path
        return http.build_request(call.method, path, content=call.body, params=call.params,
                                  headers=headers)


def _bearer(token: str | None) -> str | None:
    return f"Bearer {token}" if token else None
