"""Bearer tokens, framework-free: the API's checks (service/api/auth.py) and the learner's
metrics endpoint (service/monitor/metrics_server.py) read and compare them the same way."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive);
    None when there is none."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant time: the comparison must not tell how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
