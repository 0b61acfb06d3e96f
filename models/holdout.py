"""The recent holdout: labelled items never trained on, newest first, which the publish gate
judges candidates on and the per-tag accuracy is read from.

It knows about change. After a detected concept drift the items held out before it carry the
old concept's labels: a candidate that learned the new concept scores *worse* on them than the
version it should replace (measured through the service on a two-class swap: candidates 0.47
and 0.56 against 0.84 and 0.73 for the served version, every one refused). So a drift marks a
change point and the gate judges on the items after it only; until enough of them arrive the
holdout check is skipped (the golden set, where there is one, still guards). Of the two ways
the issue offered, this one was chosen over retiring the holdout items a new-concept model
contradicts: that model is fitted on ~50 recent samples and keeps only its confident
contradictions, and every contradicted item it misses still votes for the old concept (one
in twenty costs a whole tolerance of 0.02). The cost: right after a drift the gate does not
guard the old domains for about 10 × MIN_ITEMS labels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from models.gate import CheckSet

Item = tuple[np.ndarray, int, str]  # input, class, tag


class Holdout:
    def __init__(self, capacity: int, input_dim: int) -> None:
        self._items: deque[Item] = deque(maxlen=capacity)  # newest first
        self._dim = input_dim
        self._since_change: int | None = None  # items added since the last change point

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def add(self, x: np.ndarray, y: int, tag: str) -> None:
        self._items.appendleft((x, y, tag))
        if self._since_change is not None:
            self._since_change = min(self._since_change + 1, len(self._items))

    def extend_oldest(self, items: Iterable[Item]) -> None:
        """Items older than every held one, newest first (a reload from the store)."""
        self._items.extend(items)

    def replace(self, items: Iterable[Item]) -> None:
        """What a purge left, newest first; the change point stays on the same newest items."""
        self._items.clear()
        self._items.extend(items)
        if self._since_change is not None:
            self._since_change = min(self._since_change, len(self._items))

    def mark_change(self) -> None:
        """A concept drift was detected: the gate judges on items held out from now on."""
        self._since_change = 0

    @property
    def since_change(self) -> int | None:
        return self._since_change

    def restore_change(self, since_change: int | None) -> None:
        self._since_change = None if since_change is None else min(since_change, len(self._items))

    def arrays(self, items: Iterable[Item] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        pairs = list(self._items if items is None else items)
        if not pairs:
            return np.empty((0, self._dim), np.float32), np.empty(0, np.int64), []
        return (np.stack([x for x, _, _ in pairs]), np.array([y for _, y, _ in pairs], dtype=np.int64),
                [t for _, _, t in pairs])

    def check_set(self, routes_by_tag: bool) -> CheckSet:
        """The items the gate judges on: those after the last change point."""
        items = list(self._items)
        if self._since_change is not None:
            items = items[: self._since_change]
        x, y, tags = self.arrays(items)
        return CheckSet(x, y, tags if routes_by_tag else None)
