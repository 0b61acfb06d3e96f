"""Drift detectors: false alarms on a stationary error stream, delay after a jump, restarts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.drift import ADWIN, DETECTOR_NAMES, DriftDetector, PageHinkley, make_detector

# Stated false-alarm rate: at most 1 alarm per 100,000 stationary samples (measured with
# the defaults: Page-Hinkley 3 and ADWIN 0 alarms over 20 seeds x 20,000 samples).
FALSE_ALARMS_PER_SAMPLE = 1e-5
SEEDS = range(10)
MAX_DELAY = 200  # samples after the 0.1 -> 0.6 jump (measured: PH 47-120, ADWIN 23-55)


def _errors(rng: np.random.Generator, rate: float, n: int) -> list[float]:
    return (rng.random(n) < rate).astype(float).tolist()


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_stationary_stream_raises_at_most_the_stated_rate_of_false_alarms(name: str) -> None:
    alarms = 0
    for seed in SEEDS:
        detector = make_detector(name)
        fired = sum(detector.update(e) for e in _errors(np.random.default_rng(seed), 0.1, 20_000))
        assert detector.n_detections == fired
        alarms += fired
    assert alarms <= FALSE_ALARMS_PER_SAMPLE * 20_000 * len(SEEDS)


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_jump_in_error_rate_is_detected_within_bounded_delay(name: str) -> None:
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        detector = make_detector(name)
        assert not any(detector.update(e) for e in _errors(rng, 0.1, 5_000))
        post = _errors(rng, 0.6, MAX_DELAY)
        delay = next((i for i, e in enumerate(post) if detector.update(e)), None)
        assert delay is not None, f"{name} missed the jump (seed {seed})"
        assert detector.n_detections == 1


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_falling_error_is_not_reported_as_drift(name: str) -> None:
    # After adapting to a drift the error falls back: that recovery must not fire again.
    rng = np.random.default_rng(7)
    detector = make_detector(name)
    assert not any(detector.update(e) for e in _errors(rng, 0.6, 3_000))
    assert not any(detector.update(e) for e in _errors(rng, 0.05, 3_000))


def test_adwin_window_shrinks_to_the_new_level_after_a_change() -> None:
    rng = np.random.default_rng(3)
    detector = ADWIN()
    for e in _errors(rng, 0.1, 4_000) + _errors(rng, 0.7, 1_000):
        detector.update(e)
    assert detector.width < 2_000
    assert detector.estimate == pytest.approx(0.7, abs=0.08)


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_state_round_trip_continues_identically(name: str) -> None:
    rng = np.random.default_rng(11)
    stream = _errors(rng, 0.1, 3_000) + _errors(rng, 0.5, 2_000) + _errors(rng, 0.2, 3_000)
    original = make_detector(name)
    for e in stream[:4_100]:
        original.update(e)
    state = original.state_dict()
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in state.values())
    restored = make_detector(name)
    restored.load_state_dict({k: v.clone() for k, v in state.items()})
    assert restored.n_detections == original.n_detections
    rest = stream[4_100:]
    assert [original.update(e) for e in rest] == [restored.update(e) for e in rest]
    assert restored.n_detections == original.n_detections >= 1


def test_state_of_another_detector_is_refused() -> None:
    with pytest.raises(ValueError):
        PageHinkley().load_state_dict(ADWIN().state_dict())
    with pytest.raises(ValueError):
        ADWIN().load_state_dict(PageHinkley().state_dict())


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_reset_forgets_statistics_but_keeps_the_count(name: str) -> None:
    detector = make_detector(name)
    assert isinstance(detector, DriftDetector)
    rng = np.random.default_rng(5)
    for e in _errors(rng, 0.1, 2_000) + _errors(rng, 0.9, 500):
        detector.update(e)
    count = detector.n_detections
    detector.reset()
    assert detector.n_detections == count >= 1
    assert detector.state_dict().keys() == make_detector(name).state_dict().keys()


def test_unknown_detector_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="known"):
        make_detector("ddm")
    with pytest.raises(ValueError):
        PageHinkley(threshold=0)
    with pytest.raises(ValueError):
        ADWIN(delta=1.5)
