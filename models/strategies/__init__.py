"""Continual-learning strategies behind one protocol, built by name."""

from __future__ import annotations

from typing import Any

from models.strategies.base import Strategy, trainable_parameters
from models.strategies.ewc import OnlineEWC
from models.strategies.naive import Naive

STRATEGY_NAMES = ("naive", "ewc", "online-ewc")


def make_strategy(name: str, **kw: Any) -> Strategy:
    if name == "naive":
        return Naive(**kw)
    if name == "online-ewc":
        return OnlineEWC(**kw)
    if name == "ewc":
        # Plain EWC = Fisher accumulated without decay (one penalty anchored at the latest θ*).
        strategy = OnlineEWC(**{"gamma": 1.0, **kw})
        strategy.name = "ewc"
        return strategy
    raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")


__all__ = ["STRATEGY_NAMES", "Naive", "OnlineEWC", "Strategy", "make_strategy",
           "trainable_parameters"]
