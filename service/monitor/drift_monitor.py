"""The learner's drift statistics (docs/DESIGN.md §7): covariate drift (PSI per feature and its max),
prediction drift (JS of predicted-class shares) and label drift (JS of feedback-label shares),
each against a reference window, with alarm levels calibrated from that reference.

Windows. The reference is the first `reference_size` samples seen after start (or after
`reset`). On start the learner reads the drift stream from its oldest retained entry, so after
a restart the reference is the oldest samples still within the prediction TTL. Every later
sample goes to the current window, a sliding window of the last `window` samples; statistics
are reported only once it is full (the thresholds are calibrated for exactly that size), and
are None before, never invented. Feedback labels have their own reference and current window
of the same sizes.

Concept drift (`on_concept_drift`, which the learner calls on every concept-drift event):
same inputs, new answers. The covariate reference is kept as it is, because a concept change
says nothing about the inputs, and restarting it (what `reset` does) left PSI blind for
reference + window samples after every event, exactly where drift happens. The prediction
and label references are rebuilt from the samples that follow while the old ones stay in use,
so the JS values stay computable throughout (see `on_concept_drift`).

Thresholds: models.drift_stats bootstrap, at `false_alarm` per evaluation (the PSI level
family-wise over the features), recalibrated whenever a reference is (re)built. Evaluations of
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
    """Reference and sliding current window of class indices, with a calibrated JS level.

    `rebuild` starts a successor reference from the samples that come next; until it holds
    `reference_size` samples the old reference (and its level) stays in use, then it replaces
    it and is calibrated. The current window is never cleared, so the value, once measured,
    stays measured."""

    def __init__(self, reference_size: int, window: int, false_alarm: float, n_boot: int,
                 seed: int | None) -> None:
        self.reference_size, self.window = reference_size, window
        self.false_alarm, self.n_boot, self.seed = false_alarm, n_boot, seed
        self.reset()

    def reset(self) -> None:
        self.reference: list[int] = []
        self.successor: list[int] | None = None  # the next reference while it fills
        self.current: deque[int] = deque(maxlen=self.window)
        self.threshold: float | None = None
        self.value: float | None = None

    def rebuild(self) -> None:
        """Collect a new reference from the next `reference_size` samples. A successor that
        was still filling restarts: it would mix the concepts before and after this event. A
        first reference that is still filling goes on filling, so a value comes as soon as it
        would have without the event, and the successor then replaces it."""
        if self.reference:  # nothing seen yet: the first reference is all post-event anyway
            self.successor = []

    def _calibrate(self) -> None:
        ref = np.array(self.reference)
        self.threshold = calibrate_js_threshold(ref, self.window, int(ref.max()) + 1,
                                                self.false_alarm, self.n_boot, self.seed)

    def add(self, classes: np.ndarray) -> None:
        values = [int(c) for c in classes]
        if self.successor is not None:
            self.successor.extend(values[: self.reference_size - len(self.successor)])
        room = self.reference_size - len(self.reference)
        if room > 0:
            self.reference.extend(values[:room])
            values = values[room:]
            if len(self.reference) == self.reference_size:
                self._calibrate()
        if self.successor is not None and len(self.successor) == self.reference_size \
                and len(self.reference) == self.reference_size:
            # The successor's newest samples may also be in the current window: that overlap
            # only lowers JS (fewer false alarms) and is gone after `window` more samples.
            self.reference, self.successor = self.successor, None
            self._calibrate()
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
        """Forget everything: all three references are rebuilt (and recalibrated) from the
        samples that come next, and every statistic is None until its window refills. For an
        explicit re-baseline (the inputs' new normal accepted), not for concept drift: that
        is `on_concept_drift`."""
        self._reference: list[np.ndarray] = []
        self._reference_rows = 0
        self._current: deque[np.ndarray] = deque(maxlen=self.window)
        self._edges: list[np.ndarray] | None = None
        self._reference_shares: list[np.ndarray] | None = None
        self.psi_threshold: float | None = None
        self.feature_psi: np.ndarray | None = None
        self.predictions.reset()
        self.labels.reset()

    def on_concept_drift(self) -> None:
        """A concept-drift event: the same inputs now have new labels. Cheap (no calibration):
        safe to call on the event loop.

        - PSI (covariate): unchanged — reference, bins, level and current window all kept (a
          reference still filling goes on filling). A concept change is a change of
          P(label | input) and says nothing about P(input), so the input reference is still
          the normal to compare with; restarting it blinded PSI for reference + window
          samples after every event, and a covariate shift that began then went unseen. If
          the inputs did move (rotated digits fire the concept detector through the error
          rate), PSI alarming is exactly the report wanted; accepting new inputs as normal is
          an explicit `reset`.
        - Prediction JS and label JS: the served model's answers and the label shares may
          legitimately change with the concept, so each rebuilds its reference from the next
          `reference_size` samples (and recalibrates). Until that successor is full the old
          reference and level stay in use, so the value stays computable and reports the
          change while it settles; a later event restarts the successor (one concept per
          reference).
        """
        self.predictions.rebuild()
        self.labels.rebuild()

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
        return drift_snapshot(self.psi_max, self.psi_threshold, self.predictions, self.labels)


def drift_snapshot(psi_max: float | None, psi_threshold: float | None,
                   predictions: _ClassWindows, labels: _ClassWindows) -> dict[str, Any]:
    """The stats "drift" fields: values, their calibrated levels (None until measured) and
    the names of the statistics above their level."""
    levels = {"psi": (psi_max, psi_threshold),
              "prediction_js": (predictions.value, predictions.threshold),
              "label_js": (labels.value, labels.threshold)}
    return {
        "psi_max": psi_max,
        "prediction_js": predictions.value,
        "label_js": labels.value,
        "psi_threshold": psi_threshold,
        "prediction_js_threshold": predictions.threshold,
        "label_js_threshold": labels.threshold,
        "alarms": sorted(name for name, (value, level) in levels.items()
                         if value is not None and level is not None and value > level),
    }
