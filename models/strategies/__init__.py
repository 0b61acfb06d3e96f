"""Continual-learning strategies behind one protocol, built by name: MNEMO_STRATEGY is one
penalty (or none) optionally combined with replay, e.g. "online-ewc+replay"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.strategies.base import Strategy, StrategyBase, trainable_parameters
from models.strategies.ewc import EWC, OnlineEWC
from models.strategies.lwf import LwF
from models.strategies.mas import MAS
from models.strategies.naive import Naive
from models.strategies.progressive import Progressive
from models.strategies.si import SI


def _expand(**kw: Any) -> Strategy:
    from models.expand import Expand  # it needs the network module, which needs nothing here

    return Expand(**kw)


_FACTORIES: dict[str, Callable[..., Strategy]] = {
    "naive": Naive, "ewc": EWC, "online-ewc": OnlineEWC, "si": SI, "mas": MAS, "lwf": LwF,
    "progressive": Progressive, "expand": _expand,
}
# Strategies that add no regulariser (their protection, if any, is architectural).
UNREGULARISED = ("naive", "progressive")
STRATEGY_NAMES = tuple(_FACTORIES)
REPLAY = "replay"


def make_strategy(name: str, **kw: Any) -> Strategy:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
    return factory(**kw)


def parse_strategy(spec: str) -> tuple[str, bool]:
    """"online-ewc+replay" -> ("online-ewc", True); "replay" -> ("naive", True)."""
    parts = [p.strip() for p in spec.lower().split("+")]
    unknown = [p for p in parts if p != REPLAY and p not in _FACTORIES]
    if unknown:
        raise ValueError(f"unknown strategy part(s) {unknown} in {spec!r}; known: "
                         f"{', '.join((*STRATEGY_NAMES, REPLAY))}, joined with '+'")
    penalties = [p for p in parts if p != REPLAY]
    if len(penalties) > 1:
        raise ValueError(f"{spec!r}: at most one strategy besides replay, got "
                         f"{' and '.join(penalties)}")
    if parts.count(REPLAY) > 1:
        raise ValueError(f"{spec!r}: {REPLAY!r} given more than once")
    return (penalties[0] if penalties else "naive"), REPLAY in parts


__all__ = [
    "EWC",
    "MAS",
    "SI",
    "STRATEGY_NAMES",
    "UNREGULARISED",
    "LwF",
    "Naive",
    "OnlineEWC",
    "Strategy",
    "StrategyBase",
    "make_strategy",
    "parse_strategy",
    "trainable_parameters",
]
