"""What a Redis must hold for a deployment, from the retention figures, for the checks of the
Redis that docker-compose.yml and deploy/k8s/overlays/try-it run (their maxmemory and memory
limit), and the memory units of Redis, Docker and Kubernetes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from service.config import Settings

# docs/SCALING.md, "One Redis, or a Redis Cluster": a feedback stream entry of 64 features.
FEEDBACK_ITEM_BYTES = 300
# BENCHMARKS.md, "Redis memory under retention": the weights blob and the learner-state blob of
# one version of the 64->128->128->10 MLP with online EWC.
VERSION_BYTES = 106_336 + 532_464
# The replay buffer (1,000), holdout (500), golden set and the capped statistics history.
SMALL_STATE_BYTES = 5 * 2**20
# BENCHMARKS.md: a dedupe id costs ~55 B, kept over at most three windows of the prediction TTL.
DEDUPE_ID_BYTES = 55
DEDUPE_WINDOWS = 3
# What the limit must add to maxmemory: the AOF rewrite's fork (copy-on-write pages), client
# buffers, fragmentation.
LIMIT_OVER_MAXMEMORY = 1.5


def bounded_bytes(model: Settings) -> int:
    """The most a model's keys take that its settings bound: the prediction log (its budget,
    then predict answers 429), the feedback stream (MNEMO_MAX_LAG, then 429), the kept versions
    (and the current one) and the small state."""
    return (model.prediction_log_max_bytes + model.max_lag * FEEDBACK_ITEM_BYTES
            + (model.keep_versions + 1) * VERSION_BYTES + SMALL_STATE_BYTES)


def sustained_labels_per_second(maxmemory: int, models: Iterable[Settings]) -> float:
    """Labels a second, spread evenly over the models, whose dedupe ids fit in what maxmemory
    leaves beyond the bounded state."""
    models = list(models)
    spare = maxmemory - sum(bounded_bytes(m) for m in models)
    per_label_per_second = sum(DEDUPE_WINDOWS * m.prediction_ttl_seconds * DEDUPE_ID_BYTES
                               for m in models) / len(models)
    return spare / per_label_per_second


_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
                "g": 1000**3, "gb": 1024**3}
_DOCKER_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_KUBERNETES_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2,
                     "Gi": 1024**3}


def _parse(value: str | int, units: dict[str, int], casefold: bool) -> int:
    found = re.fullmatch(r"(\d+)([A-Za-z]*)", str(value).strip())
    assert found, value
    unit = found.group(2).lower() if casefold else found.group(2)
    assert unit in units, value
    return int(found.group(1)) * units[unit]


def redis_bytes(value: str) -> int:
    """redis.conf's memory units: 1k = 1000, 1kb = 1024, … (case-insensitive)."""
    return _parse(value, _REDIS_UNITS, casefold=True)


def docker_bytes(value: str | int) -> int:
    """Compose's memory sizes (binary: 1g = 1024³)."""
    return _parse(value, _DOCKER_UNITS, casefold=True)


def kubernetes_bytes(value: str | int) -> int:
    """A Kubernetes memory quantity (1G = 10⁹, 1Gi = 2³⁰)."""
    return _parse(value, _KUBERNETES_UNITS, casefold=False)
