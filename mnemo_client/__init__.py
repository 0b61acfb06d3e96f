"""mnemo_client: a Python client for Mnemo's HTTP API (sync `Client`, asyncio `AsyncClient`).

    from mnemo_client import ByPrediction, Client

    with Client("http://127.0.0.1:8000", token="…") as mnemo:
        answer = mnemo.predict([[5.1, 3.5, 1.4, 0.2]], ids=["req-1"])
        mnemo.feedback([ByPrediction("req-1", "setosa")])

Both retry 429/503 (honouring Retry-After) and lost connections within a deadline, give
feedback items ids so a retry counts once, and raise `MnemoError` subclasses carrying the
server's `detail` (Client's docstring has the details).
"""

from mnemo_client._async import AsyncClient
from mnemo_client._calls import with_feedback_ids
from mnemo_client._retry import RetryPolicy
from mnemo_client._sync import Client
from mnemo_client.errors import (
    AuthError,
    ConflictError,
    ConnectionFailedError,
    MnemoError,
    NotFoundError,
    PayloadTooLargeError,
    ResponseError,
    UnavailableError,
    ValidationError,
)
from mnemo_client.models import (
    Activation,
    ByPrediction,
    FeedbackItem,
    FeedbackResult,
    GoldenResult,
    Label,
    Prediction,
    Predictions,
    PurgeStatus,
    Stats,
    Version,
    VersionPage,
    WithInputs,
)

__all__ = [
    "Activation",
    "AsyncClient",
    "AuthError",
    "ByPrediction",
    "Client",
    "ConflictError",
    "ConnectionFailedError",
    "FeedbackItem",
    "FeedbackResult",
    "GoldenResult",
    "Label",
    "MnemoError",
    "NotFoundError",
    "PayloadTooLargeError",
    "Prediction",
    "Predictions",
    "PurgeStatus",
    "ResponseError",
    "RetryPolicy",
    "Stats",
    "UnavailableError",
    "ValidationError",
    "Version",
    "VersionPage",
    "WithInputs",
    "with_feedback_ids",
]
