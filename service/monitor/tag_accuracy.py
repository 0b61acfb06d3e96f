"""Per-tag holdout accuracy of the served version and forgetting (docs/DESIGN.md §6, §7).

Smoothing: at each publish the served version answers the holdout; per tag, its accuracy is
taken over that tag's most recent `WINDOW` holdout items (100), and reported only once the
tag has at least `MIN_ITEMS` (20) of them, so a handful of items cannot read as forgetting.
Forgetting = the best such accuracy seen on the tag − the current one (never below 0). A tag
whose items have all left the holdout keeps its last measured values.

Tags are folded as the metrics need them: the first `max_tags` distinct tags keep their
names, later ones count as "other" (a new tag is never refused), items without a tag as
"untagged".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

UNTAGGED = "untagged"
OTHER = "other"
WINDOW = 100
MIN_ITEMS = 20


class TagFolder:
    def __init__(self, max_tags: int) -> None:
        self.max_tags = max_tags
        self._known: set[str] = set()

    def fold(self, tag: str) -> str:
        if not tag:
            return UNTAGGED
        if tag in self._known:
            return tag
        if len(self._known) < self.max_tags:
            self._known.add(tag)
            return tag
        return OTHER


class TagAccuracy:
    def __init__(self, max_tags: int, window: int = WINDOW, min_items: int = MIN_ITEMS) -> None:
        self.folder = TagFolder(max_tags)
        self.window = window
        self.min_items = min_items
        self.current: dict[str, float] = {}
        self.best: dict[str, float] = {}

    def observe(self, tags: Iterable[str]) -> None:
        """Tags in arrival order: the first `max_tags` seen keep their own names."""
        for tag in tags:
            self.folder.fold(tag)

    def evaluate(self, tags: Sequence[str], correct: Sequence[bool]) -> None:
        """Holdout items, newest first: their raw tags and whether the served version was right."""
        groups: dict[str, list[bool]] = {}
        for tag, ok in zip(tags, correct, strict=True):
            group = groups.setdefault(self.folder.fold(tag), [])
            if len(group) < self.window:
                group.append(bool(ok))
        for tag, group in groups.items():
            if len(group) >= self.min_items:
                acc = sum(group) / len(group)
                self.current[tag] = acc
                self.best[tag] = max(self.best.get(tag, acc), acc)

    def report(self) -> dict[str, tuple[float, float]]:
        """Per folded tag: (accuracy, forgetting)."""
        return {tag: (acc, max(0.0, self.best[tag] - acc)) for tag, acc in self.current.items()}

    def as_json(self) -> dict[str, dict[str, float]] | None:
        """The /v1/stats `tags` field; None until some tag has enough holdout items."""
        return {tag: {"accuracy": round(acc, 4), "forgetting": round(forgetting, 4)}
                for tag, (acc, forgetting) in self.report().items()} or None

    def seed(self, previous: Mapping[str, Any] | None) -> None:
        """Resume the best values from the stats a previous learner wrote (best = a + f)."""
        for tag, entry in (previous or {}).items():
            try:
                best = float(entry["accuracy"]) + float(entry["forgetting"])
            except (KeyError, TypeError, ValueError):
                continue
            if tag not in (UNTAGGED, OTHER):
                self.folder.fold(tag)
            self.best[tag] = max(self.best.get(tag, best), best)
