"""Drift statistics of served records, per field (MNEMO_FEATURES; docs/DESIGN.md §7): the
record deployments' counterpart of DriftMonitor, with the same windows, the same snapshot keys
(plus `fields`) and the same calibrated PSI method, applied to each field's own bins.

Every field is turned into a discrete variable whose bins are fixed by the reference window:

- numeric: the reference's quantile bins of the present values (as DriftMonitor's), plus one
  bin for missing values: a field that starts (or stops) arriving empty is drift too;
- categorical: the reference's `top_categories` most frequent values, one bin each, then
  `other` (every value outside that top, seen in the reference or new), then missing;
- boolean: false, true, missing.

PSI over those bins' shares, reference vs current window (EPSILON-smoothed exactly as
models.drift_stats does), is the field's drift figure. PSI rather than JS for the categorical
shares too: one statistic means one family-wise level over all fields and one `psi_max`, and
on shares PSI is the symmetrised KL divergence the numeric bins already use.

Threshold: the bootstrap of models.drift_stats.calibrate_psi_threshold replayed on these bins:
each pseudo-reference (a resample of the reference records) rebuilds every field's bins (its
own quantiles and its own top categories, so a rare category falling into `other` is part of
the noise), windows drawn from the reference are binned by them, and the level is the
tolerance quantile of the max over fields. One level, family-wise over all fields, at
`false_alarm` per evaluation.

Memory is bounded whatever the stream brings: the reference keeps at most `reference_size`
raw values per field until it is calibrated, then only its bins (at most `top_categories`
values per categorical field) and shares; the current window is `window` × fields bin
indices. No count over the whole stream is kept, so 100,000 distinct values cost nothing more
than 10. A record that does not fit the schema (sampled under an earlier one) is skipped with
its prediction, as DriftMonitor skips rows of another input dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.drift_stats import (
    DEFAULT_BINS,
    EPSILON,
    _psi_max_of_windows,
    _tolerance_level,
    psi_from_proportions,
)
from models.features import CATEGORICAL, NUMERIC, FeatureSchema, RecordError
from service.monitor.drift_monitor import _ClassWindows, drift_snapshot

DEFAULT_TOP_CATEGORIES = 10
MISSING = -1  # a missing value's code in a reference column


@dataclass(frozen=True)
class FieldBins:
    """How one field's values map to bins, fixed by a reference."""

    kind: str
    edges: np.ndarray  # numeric: inner quantile edges of the present values
    top: dict[str, int]  # categorical: value → its bin (the rest: `other`)

    @property
    def size(self) -> int:
        if self.kind == NUMERIC:
            return len(self.edges) + 2  # quantile bins, missing
        if self.kind == CATEGORICAL:
            return len(self.top) + 2  # top values, other, missing
        return 3  # false, true, missing

    @property
    def missing(self) -> int:
        return self.size - 1

    def bin_of(self, value: object) -> int:
        """The bin of one checked value (None: missing)."""
        if value is None:
            return self.missing
        if self.kind == NUMERIC:
            return int(np.searchsorted(self.edges, float(value), side="left"))  # type: ignore[arg-type]
        if self.kind == CATEGORICAL:
            return self.top.get(value, len(self.top))  # type: ignore[arg-type]
        return int(bool(value))


def _column_bins(kind: str, column: np.ndarray, labels: Sequence[str], bins: int, top_k: int,
                 apply: np.ndarray | None = None) -> tuple[FieldBins, np.ndarray]:
    """A field's bins built from a reference column, and the bin of each row of `apply`
    (default: the column itself) under them.

    Columns: numeric floats (NaN: missing), categorical codes into `labels` (MISSING), or
    boolean 0/1 (MISSING)."""
    rows = column if apply is None else apply
    empty = np.empty(0)
    if kind == NUMERIC:
        present = ~np.isnan(column)
        edges = (np.unique(np.quantile(column[present], np.linspace(0, 1, bins + 1)[1:-1]))
                 if present.any() else empty)
        out = np.where(np.isnan(rows), len(edges) + 1,
                       np.searchsorted(edges, np.nan_to_num(rows), side="left"))
        return FieldBins(kind, edges, {}), out
    codes = column.astype(np.int64)
    if kind == CATEGORICAL:
        counts = np.bincount(codes[codes != MISSING], minlength=len(labels))
        # Most frequent first; ties by value order, so the same reference gives the same top.
        top_codes = [int(c) for c in np.argsort(-counts, kind="stable")[:top_k] if counts[c] > 0]
        lookup = np.full(len(labels) + 1, len(top_codes), dtype=np.int64)  # default: other
        lookup[top_codes] = np.arange(len(top_codes))
        lookup[MISSING] = len(top_codes) + 1  # the extra last slot
        top = {labels[c]: i for i, c in enumerate(top_codes)}
        return FieldBins(kind, empty, top), lookup[rows.astype(np.int64)]
    rows = rows.astype(np.int64)
    return FieldBins(kind, empty, {}), np.where(rows == MISSING, 2, rows)


def _shares(bin_rows: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Per field, the share of rows in each bin, + EPSILON, renormalised (as bin_proportions)."""
    out = []
    for j, size in enumerate(sizes):
        share = np.bincount(bin_rows[:, j], minlength=size)[:size] / max(len(bin_rows), 1)
        share = share + EPSILON
        out.append(share / share.sum())
    return out


class RecordDriftMonitor:
    """Per-field covariate drift of records, plus prediction and label JS as DriftMonitor.

    Same life cycle and report as DriftMonitor (see its module note): `add_samples` with the
    sampled records, `add_labels`, `on_concept_drift`, `reset`, `snapshot`; `feature_psi` maps
    each field's name to its PSI (None until the current window is full)."""

    def __init__(self, schema: FeatureSchema, reference_size: int = 1000, window: int = 500,
                 bins: int = DEFAULT_BINS, false_alarm: float = 0.01, n_boot: int = 200,
                 seed: int | None = None, top_categories: int = DEFAULT_TOP_CATEGORIES) -> None:
        if reference_size < 2 or window < 1 or top_categories < 1:
            raise ValueError("the reference needs 2+ samples, the window 1+, the top 1+ values")
        self.schema, self.reference_size, self.window = schema, reference_size, window
        self.bins, self.false_alarm, self.n_boot, self.seed = bins, false_alarm, n_boot, seed
        self.top_categories = top_categories
        self.names = [spec.name for spec in schema.fields]
        self.kinds = [spec.kind for spec in schema.fields]
        self.predictions = _ClassWindows(reference_size, window, false_alarm, n_boot, seed)
        self.labels = _ClassWindows(reference_size, window, false_alarm, n_boot, seed)
        self.reset()

    def reset(self) -> None:
        """Forget everything (an explicit re-baseline, as DriftMonitor.reset)."""
        # Raw reference values per field while it fills; dropped once calibrated.
        self._reference: list[list[Any]] | None = [[] for _ in self.names]
        self._reference_rows = 0
        self._fields: list[FieldBins] | None = None
        self._reference_shares: list[np.ndarray] | None = None
        # The current window as bin indices: a ring buffer of `window` rows.
        self._current = np.zeros((self.window, len(self.names)), dtype=np.int64)
        self._filled = self._next = 0
        self.psi_threshold: float | None = None
        self.feature_psi: dict[str, float] | None = None
        self.predictions.reset()
        self.labels.reset()

    def on_concept_drift(self) -> None:
        """Covariate reference kept; prediction and label references rebuilt (the reasons are
        DriftMonitor.on_concept_drift's)."""
        self.predictions.rebuild()
        self.labels.rebuild()

    # ---- inputs ---------------------------------------------------------------------------
    def add_samples(self, records: Sequence[object], predicted: np.ndarray) -> None:
        """Sampled served records and their predicted class indices. May calibrate (a
        bootstrap): call it off the event loop."""
        predicted = np.asarray(predicted)
        kept, classes = [], []
        for record, klass in zip(records, predicted.tolist(), strict=True):
            try:
                kept.append(self.schema.check(record))
            except RecordError:
                continue  # sampled under another schema: not comparable
            classes.append(klass)
        if not kept:
            return
        self.predictions.add(np.array(classes, dtype=np.int64))
        if self._reference is not None:
            room = self.reference_size - self._reference_rows
            for column, name in zip(self._reference, self.names, strict=True):
                column.extend(record.get(name) for record in kept[:room])
            self._reference_rows += len(kept[:room])
            kept = kept[room:]
            if self._reference_rows == self.reference_size:
                self._build_reference(self._reference)
                self._reference = None
        if not kept or self._fields is None:
            return
        fields = self._fields
        rows = np.array([[f.bin_of(record.get(name)) for f, name in zip(fields, self.names,
                                                                         strict=True)]
                         for record in kept[-self.window:]], dtype=np.int64)
        at = (self._next + np.arange(len(rows))) % self.window
        self._current[at] = rows
        self._next = int(at[-1] + 1) % self.window
        self._filled = min(self.window, self._filled + len(rows))
        if self._filled == self.window:
            assert self._reference_shares is not None
            shares = _shares(self._current, [f.size for f in fields])
            psi = psi_from_proportions(self._reference_shares, shares)
            self.feature_psi = {name: float(v) for name, v in zip(self.names, psi, strict=True)}

    def add_labels(self, labels: np.ndarray) -> None:
        """Class indices of feedback labels the learner processed."""
        self.labels.add(np.asarray(labels))

    def _columns(self, raw: list[list[Any]]) -> tuple[list[np.ndarray], list[list[str]]]:
        """Raw reference values per field as numeric columns (see _column_bins)."""
        columns, labels = [], []
        for kind, values in zip(self.kinds, raw, strict=True):
            names: list[str] = []
            if kind == NUMERIC:
                column = np.array([np.nan if v is None else float(v) for v in values])
            elif kind == CATEGORICAL:
                names = sorted({v for v in values if v is not None})
                index = {v: i for i, v in enumerate(names)}
                column = np.array([MISSING if v is None else index[v] for v in values])
            else:
                column = np.array([MISSING if v is None else int(bool(v)) for v in values])
            columns.append(column)
            labels.append(names)
        return columns, labels

    def _build_reference(self, raw: list[list[Any]]) -> None:
        columns, labels = self._columns(raw)
        built = [_column_bins(k, c, names, self.bins, self.top_categories)
                 for k, c, names in zip(self.kinds, columns, labels, strict=True)]
        self._fields = [fields for fields, _ in built]
        bin_rows = np.stack([rows for _, rows in built], axis=1)
        self._reference_shares = _shares(bin_rows, [f.size for f in self._fields])
        self.psi_threshold = self._calibrate(columns, labels)

    def _calibrate(self, columns: list[np.ndarray], labels: list[list[str]],
                   n_references: int = 100, confidence: float = 0.99) -> float:
        """calibrate_psi_threshold's bootstrap over these fields' bins (module note)."""
        n = len(columns[0])
        rng = np.random.default_rng(self.seed)
        max_bins = max(self.bins + 1, self.top_categories + 2, 3)
        draws = np.empty((n_references, self.n_boot))
        for r in range(n_references):
            pick = rng.integers(0, n, n)
            shares, bin_of_row = [], []
            for kind, column, names in zip(self.kinds, columns, labels, strict=True):
                # windows come from the reference (the stand-in for the truth), binned by the
                # pseudo-reference's bins; the pseudo's own rows are reference rows `pick`
                fields, ref_rows = _column_bins(kind, column[pick], names, self.bins,
                                                self.top_categories, apply=column)
                shares += _shares(ref_rows[pick][:, None], [fields.size])
                bin_of_row.append(ref_rows)
            rows = rng.integers(0, n, (self.n_boot, self.window))
            draws[r] = _psi_max_of_windows(shares, np.stack(bin_of_row, axis=1), rows, max_bins)
        return _tolerance_level(draws, self.false_alarm, confidence)

    # ---- report ---------------------------------------------------------------------------
    @property
    def psi_max(self) -> float | None:
        return None if self.feature_psi is None else max(self.feature_psi.values())

    def snapshot(self) -> dict[str, Any]:
        """DriftMonitor.snapshot's fields, plus `fields`: each field's PSI (None until
        measured)."""
        fields = self.feature_psi  # read once: psi_max and fields from the same window
        psi_max = None if fields is None else max(fields.values())
        return {**drift_snapshot(psi_max, self.psi_threshold, self.predictions, self.labels),
                "fields": None if fields is None else dict(fields)}

    def retained_values(self) -> int:
        """How many raw values and category names the monitor holds: bounded by
        reference_size × fields + top_categories × fields, whatever the stream."""
        raw = sum(len(c) for c in self._reference) if self._reference is not None else 0
        return raw + sum(len(f.top) for f in self._fields or ())

