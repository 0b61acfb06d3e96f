"""Version metadata shared by the API (version 0) and the learner (every later version)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from models.checkpoint import features_metadata, labels_metadata, model_to_bytes
from models.features import RecordEncoder
from models.nets import MLPConfig
from service.config import Settings, initial_model


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def version_meta(
    settings: Settings,
    *,
    version: int,
    parent: int | None,
    samples_seen: int,
    last_stream_id: str,
    labels: list[str | int],
    evaluation: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "version": version,
        "parent": parent,
        "created_at": now_iso(),
        "samples_seen": samples_seen,
        "last_stream_id": last_stream_id,
        "strategy": settings.strategy,
        "labels": labels,
        "eval": evaluation,
        "architecture": {"model": settings.model, "input_dim": settings.input_dim,
                         "hidden": list(settings.hidden),
                         **({"features": settings.features} if settings.features else {})},
        **extra,
    }


def model_config(settings: Settings, num_classes: int) -> MLPConfig:
    return settings.network(num_classes)


def initial_version(settings: Settings) -> tuple[dict[str, Any], bytes]:
    """Version 0: the untrained network over the declared labels, or the transferred one."""
    labels = settings.typed_labels()
    model = initial_model(settings)
    transfer = ({"transfer": {"init_checkpoint": str(settings.init_checkpoint),
                              "freeze": list(settings.freeze)}}
                if settings.init_checkpoint is not None or settings.freeze else {})
    meta = version_meta(settings, version=0, parent=None, samples_seen=0,
                        last_stream_id="0-0", labels=labels, evaluation={}, **transfer)
    schema = settings.feature_schema
    encoder = None if schema is None else RecordEncoder(schema)  # empty vocabularies
    return meta, model_to_bytes(model, labels_metadata(settings.labels) | features_metadata(encoder))
