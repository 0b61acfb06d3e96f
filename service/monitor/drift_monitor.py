"""The learner's drift statistics (DESIGN §7): covariate drift (PSI per feature and its max),
prediction drift (JS of predicted-class shares) and label drift (JS of feedback-label shares),
each against a reference window, with alarm levels calibrated from that reference.

Windows. The reference is the first `reference_size` samples seen after start (or after
`reset`, which the learner calls on a concept-drift event: the adapted model and its new
inputs become the new normal). On start the learner reads the drift stream from its oldest
retained entry, so after a restart the reference is the oldest samples still within the
prediction TTL. Every later sample goes to the current window, a sliding window of the last
`window` samples; statistics are reported only once it is full (the thresholds are calibrated
for exactly that size), and are None before, never invented. Feedback labels have their own
reference and current window of the same sizes.

Thresholds: models.drift_stats bootstrap, at `false_alarm` per evaluation (the PSI level
family-wise over the features), recalibrated whenever the reference is rebuilt. Evaluations of
a sliding window overlap, so alarms are correlated in time; the rate is per evaluation.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from models.drift_stats import (
    DEFAULT_BINS,
    bin_proportions,
    calibrate_js_threshold,
    calibrate_psi_threshold,
    distribution,
    js_divergence,
    psi_from_proportions,
    quantile_edges,
)


class _ClassWindows:
    """Reference and sliding current window of class indices, with a calibrated JS level."""

    def __init__(self, reference_size: int, window: int, false_alarm: float, n_boot: int,
                 seed: int | None) -> None:
        self.reference_size, self.window = reference_size, window
        self.false_alarm, self.n_boot, self.seed = false_alarm, n_boot, seed
        self.reset()

    def reset(self) -> None:
        self.reference: list[int] = []
        self.current: deque[int] = deque(maxlen=self.window)
        self.threshold: float | None = None
        self.value: float | None = None

    def add(self, classes: np.ndarray) -> None:
        values = [int(c) for c in classes]
        room = self.reference_size - len(self.reference)
        if room > 0:
            self.reference.extend(values[:room])
            values = values[room:]
            if len(self.reference) == self.reference_size:
                ref = np.array(self.reference)
                self.threshold = calibrate_js_threshold(ref, self.window, int(ref.max()) + 1,
                                                        self.false_alarm, self.n_boot, self.seed)
        self.current.extend(values)
        if values and len(self.current) == self.window:
            n = max(max(self.reference), max(self.current)) + 1
            self.value = js_divergence(distribution(np.array(self.reference), n),
                                       distribution(np.array(self.current), n))


class DriftMonitor:
    def __init__(self, n_features: int, reference_size: int = 1000, window: int = 500,
                 bins: int = DEFAULT_BINS, false_alarm: float = 0.01, n_boot: int = 200,
                 seed: int | None = None) -> None:
        if reference_size < 2 or window < 1:
            raise ValueError("the reference needs 2+ samples and the window 1+")
        self.n_features, self.reference_size, self.window = n_features, reference_size, window
        self.bins, self.false_alarm, self.n_boot, self.seed = bins, false_alarm, n_boot, seed
        self.predictions = _ClassWindows(reference_size, window, false_alarm, n_boot, seed)
        self.labels = _ClassWindows(reference_size, window, false_alarm, n_boot, seed)
        self.reset()

    def reset(self) -> None:
        """Rebuild both references from the samples that come next (and recalibrate)."""
        self._reference: list[np.ndarray] = []
        self._reference_rows = 0
        self._current: deque[np.ndarray] = deque(maxlen=self.window)
        self._edges: list[np.ndarray] | None = None
        self._reference_shares: list[np.ndarray] | None = None
        self.psi_threshold: float | None = None
        self.feature_psi: np.ndarray | None = None
        self.predictions.reset()
        self.labels.reset()

    # ---- inputs ---------------------------------------------------------------------------
    def add_samples(self, x: np.ndarray, predicted: np.ndarray) -> None:
        """Sampled served inputs (rows, n_features) and their predicted class indices. May
        calibrate (a bootstrap, ~n_boot PSI evaluations): call it off the event loop."""
        rows = np.asarray(x, dtype=np.float64).reshape(-1, self.n_features)
        self.predictions.add(np.asarray(predicted))
        room = self.reference_size - self._reference_rows
        if room > 0:
            self._reference.append(rows[:room])
            self._reference_rows += len(rows[:room])
            rows = rows[room:]
            if self._reference_rows == self.reference_size:
                reference = np.concatenate(self._reference)
                self._edges = quantile_edges(reference, self.bins)
                self._reference_shares = bin_proportions(reference, self._edges)
                self.psi_threshold = calibrate_psi_threshold(
                    reference, self.window, self.n_features, self.false_alarm, self.n_boot,
                    self.seed, self.bins)
        self._current.extend(rows)
        if len(rows) and len(self._current) == self.window and self._edges is not None:
            assert self._reference_shares is not None
            shares = bin_proportions(np.stack(self._current), self._edges)
            self.feature_psi = psi_from_proportions(self._reference_shares, shares)

    def add_labels(self, labels: np.ndarray) -> None:
        """Class indices of feedback labels the learner processed."""
        self.labels.add(np.asarray(labels))

    # ---- report ---------------------------------------------------------------------------
    @property
    def psi_max(self) -> float | None:
        return None if self.feature_psi is None else float(self.feature_psi.max())

    def snapshot(self) -> dict[str, Any]:
        """The stats "drift" fields: values, their calibrated levels (None until measured) and
        the names of the statistics above their level."""
        levels = {"psi": (self.psi_max, self.psi_threshold),
                  "prediction_js": (self.predictions.value, self.predictions.threshold),
                  "label_js": (self.labels.value, self.labels.threshold)}
        return {
            "psi_max": self.psi_max,
            "prediction_js": self.predictions.value,
            "label_js": self.labels.value,
            "psi_threshold": self.psi_threshold,
            "prediction_js_threshold": self.predictions.threshold,
            "label_js_threshold": self.labels.threshold,
            "alarms": sorted(name for name, (value, level) in levels.items()
                             if value is not None and level is not None and value > level),
        }
