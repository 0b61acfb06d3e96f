"""DriftMonitor across concept-drift events (service/monitor/drift_monitor.py; numpy only, no
Redis): `on_concept_drift` keeps the covariate reference, so a covariate shift that starts after
the event still alarms within 500 sampled rows, which the old `reset` on every event could not;
the prediction/label references are rebuilt without the JS values ever going back to None.

Rows are fed 8 at a time, as the API samples them from predict requests. The false-alarm rate
with events on a stationary stream is in test_models_drift_calibration.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from service.monitor.drift_monitor import DriftMonitor

FEATURES, REFERENCE, WINDOW, BATCH = 8, 1000, 500, 8
SHIFTED_FEATURE, SHIFT_STD = 3, 1.0
CLASS_P = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
DETECT_WITHIN = 500  # sampled rows after the shift starts


def feed(monitor: DriftMonitor, rng: np.random.Generator, rows: int, shift: float = 0.0,
         check: Callable[[DriftMonitor], None] | None = None) -> int | None:
    """Feed `rows` standard-normal rows (feature SHIFTED_FEATURE moved by `shift`) in batches of
    BATCH (the last may be smaller); returns how many rows it took until the first PSI alarm (None: no alarm)."""
    for start in range(0, rows, BATCH):
        size = min(BATCH, rows - start)
        done = start + size
        x = rng.normal(size=(size, FEATURES))
        x[:, SHIFTED_FEATURE] += shift
        monitor.add_samples(x, rng.choice(len(CLASS_P), p=CLASS_P, size=size))
        if check is not None:
            check(monitor)
        if "psi" in monitor.snapshot()["alarms"]:
            return done
    return None


def shift_after_event(seed: int, on_event: Callable[[DriftMonitor], None]
                      ) -> tuple[DriftMonitor, int | None, list[float | None]]:
    """Stationary (reference + window + 500 rows), a concept-drift event, 200 more stationary
    rows, then a 1-std shift of one feature for DETECT_WITHIN rows. Returns the monitor, the
    detection delay in rows after the shift starts, and psi_max after every batch since the
    event."""
    rng = np.random.default_rng(seed)
    monitor = DriftMonitor(FEATURES, REFERENCE, WINDOW, seed=seed)
    assert feed(monitor, rng, REFERENCE + WINDOW + 500) is None
    assert monitor.psi_max is not None and monitor.psi_threshold is not None
    on_event(monitor)
    seen: list[float | None] = []

    def record(m: DriftMonitor) -> None:
        seen.append(m.psi_max)

    assert feed(monitor, rng, 200, check=record) is None  # no alarm before the shift
    delay = feed(monitor, rng, DETECT_WITHIN, SHIFT_STD, check=record)
    return monitor, delay, seen


@pytest.mark.parametrize("seed", range(5))
def test_covariate_shift_after_a_concept_drift_event_alarms_within_500_rows(seed: int) -> None:
    monitor, delay, seen = shift_after_event(seed, DriftMonitor.on_concept_drift)
    threshold = monitor.psi_threshold
    print(f"\nseed {seed}: PSI alarm {delay} rows after the shift (level {threshold:.4f})")
    assert delay is not None and delay <= DETECT_WITHIN
    assert all(value is not None for value in seen)  # never blind across the event


@pytest.mark.parametrize("seed", range(5))
def test_the_old_reset_on_the_event_misses_the_same_shift(seed: int) -> None:
    """The contrast is real: with `reset` (the previous handling of a concept-drift event) the
    same stream, same seed, gives no PSI at all for reference + window rows after the event."""
    monitor, delay, seen = shift_after_event(seed, DriftMonitor.reset)
    assert delay is None
    assert all(value is None for value in seen) and monitor.psi_threshold is None


def test_concept_drift_events_leave_the_covariate_statistics_untouched() -> None:
    """Events from the very first sample on (also while the reference fills) change nothing in
    PSI: the same stream with and without events gives identical values and levels."""
    plain, evented = DriftMonitor(FEATURES, seed=1), DriftMonitor(FEATURES, seed=1)
    rng = np.random.default_rng(2)
    for step in range(400):  # 3,200 rows; an event every 296 rows
        x = rng.normal(size=(BATCH, FEATURES))
        predicted = rng.choice(len(CLASS_P), p=CLASS_P, size=BATCH)
        if step % 37 == 5:
            evented.on_concept_drift()
        plain.add_samples(x, predicted)
        evented.add_samples(x, predicted)
        assert evented.psi_max == plain.psi_max
        assert evented.psi_threshold == plain.psi_threshold
    assert plain.psi_max is not None


def test_label_shares_after_a_concept_change_alarm_then_become_the_new_normal() -> None:
    """Label JS across an event whose new concept has other label shares: it stays measured
    throughout, alarms against the old reference while the successor fills, and once the
    successor (the next REFERENCE labels) replaces it, the new shares are the normal."""
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(FEATURES, REFERENCE, WINDOW, seed=3)
    n = len(CLASS_P)

    def labels(count: int, p: np.ndarray) -> None:
        for start in range(0, count, BATCH):
            measured = monitor.labels.value is not None
            monitor.add_labels(rng.choice(n, p=p, size=min(BATCH, count - start)))
            assert not measured or monitor.labels.value is not None  # never back to None

    labels(REFERENCE + WINDOW, CLASS_P)
    assert monitor.labels.value is not None
    old_level = monitor.labels.threshold
    assert "label_js" not in monitor.snapshot()["alarms"]
    monitor.on_concept_drift()
    labels(WINDOW, CLASS_P[::-1].copy())  # the new concept's shares, against the old reference
    assert "label_js" in monitor.snapshot()["alarms"]
    assert monitor.labels.threshold == old_level  # still the old reference
    labels(REFERENCE - WINDOW, CLASS_P[::-1].copy())  # the successor is full: swapped in
    assert monitor.labels.threshold != old_level and monitor.labels.successor is None
    labels(WINDOW, CLASS_P[::-1].copy())  # a window past the swap: no overlap left
    assert "label_js" not in monitor.snapshot()["alarms"]


def test_frequent_events_never_leave_the_class_statistics_unmeasured() -> None:
    """Events every 304 samples from the start, more often than a successor can fill: the
    first reference still completes on schedule and stays in use, so both JS values appear at
    REFERENCE + WINDOW samples, as without events, and never go back to None."""
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(FEATURES, REFERENCE, WINDOW, seed=4)
    n = len(CLASS_P)
    for step in range(500):  # 4,000 samples
        if step % 38 == 7:
            monitor.on_concept_drift()
        monitor.add_samples(rng.normal(size=(BATCH, FEATURES)),
                            rng.choice(n, p=CLASS_P, size=BATCH))
        monitor.add_labels(rng.choice(n, p=CLASS_P, size=BATCH))
        ready = (step + 1) * BATCH >= REFERENCE + WINDOW
        for stats in (monitor.predictions, monitor.labels):
            assert (stats.value is not None) == ready
            assert (stats.threshold is not None) == ((step + 1) * BATCH >= REFERENCE)
    snap = monitor.snapshot()
    assert None not in (snap["psi_max"], snap["prediction_js"], snap["label_js"])


def test_reset_still_forgets_everything() -> None:
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(FEATURES, REFERENCE, WINDOW, seed=5)
    feed(monitor, rng, REFERENCE + WINDOW)
    monitor.add_labels(rng.choice(len(CLASS_P), p=CLASS_P, size=REFERENCE + WINDOW))
    monitor.on_concept_drift()
    monitor.reset()
    assert monitor.snapshot() == {
        "psi_max": None, "prediction_js": None, "label_js": None, "psi_threshold": None,
        "prediction_js_threshold": None, "label_js_threshold": None, "alarms": []}
    assert monitor.labels.successor is None and monitor.predictions.successor is None
