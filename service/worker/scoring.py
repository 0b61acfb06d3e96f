"""Prequential scoring (test-then-train): what the served version got right, over a window."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class PrequentialWindow:
    """Accuracy of the served version on each new label before training on it, over a sliding
    window, with balanced accuracy and per-class recall (accuracy alone hides imbalance)."""

    def __init__(self, size: int = 1000) -> None:
        self._pairs: deque[tuple[int, int]] = deque(maxlen=size)

    def add(self, true: Sequence[int], predicted: Sequence[int]) -> None:
        self._pairs.extend(zip(true, predicted, strict=True))

    def __len__(self) -> int:
        return len(self._pairs)

    def accuracy(self) -> float | None:
        if not self._pairs:
            return None
        return sum(t == p for t, p in self._pairs) / len(self._pairs)

    def recall_by_class(self) -> dict[int, float]:
        hits: dict[int, int] = {}
        totals: dict[int, int] = {}
        for t, p in self._pairs:
            totals[t] = totals.get(t, 0) + 1
            hits[t] = hits.get(t, 0) + (t == p)
        return {c: hits[c] / totals[c] for c in sorted(totals)}

    def balanced_accuracy(self) -> float | None:
        recalls = self.recall_by_class()
        return sum(recalls.values()) / len(recalls) if recalls else None
