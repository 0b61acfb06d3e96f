"""Metric families shared by every model of one process.

One process serves or trains several models (MNEMO_MODELS); each model's metrics object binds
its `model` label to the same families, which a registry may hold only once."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_KNOWN: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = \
    weakref.WeakKeyDictionary()


class Families:
    """The families of one registry, each registered on first use."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._known = _KNOWN.setdefault(registry, {})

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        return self._get(Counter, name, documentation, labels)

    def gauge(self, name: str, documentation: str, labels: list[str]) -> Gauge:
        return self._get(Gauge, name, documentation, labels)

    def histogram(self, name: str, documentation: str, labels: list[str],
                  buckets: tuple[float, ...]) -> Histogram:
        return self._get(Histogram, name, documentation, labels, buckets=buckets)

    def once(self, what: str, register: Callable[[], None]) -> None:
        """Run `register` (collectors without a model label) the first time only."""
        if what not in self._known:
            register()
            self._known[what] = True

    def _get(self, kind: Callable[..., Any], name: str, documentation: str, labels: list[str],
             **options: Any) -> Any:
        if name not in self._known:
            self._known[name] = kind(name, documentation, labels, registry=self.registry,
                                     **options)
        return self._known[name]
