"""PSI, Jensen–Shannon and the bootstrap-calibrated alarm levels (models/drift_stats.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.drift_stats import (
    DEFAULT_BINS,
    _psi_max_of_windows,
    _tolerance_level,
    bin_proportions,
    calibrate_js_threshold,
    calibrate_psi_threshold,
    distribution,
    js_divergence,
    js_divergence_rows,
    psi,
    quantile_edges,
)


def test_psi_is_zero_for_identical_samples_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2000, 3))
    assert np.allclose(psi(reference, reference), 0.0, atol=1e-12)
    values = [psi(reference, rng.normal(size=(2000, 3)) + shift).mean()
              for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values[0] < 0.02
    assert all(a < b for a, b in itertools.pairwise(values))
    assert values[3] > 0.5  # a 1-std shift is a large PSI by the usual rule of thumb (> 0.25)


def test_psi_is_per_feature_and_one_dimensional_input_is_one_feature() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(1000, 4))
    current = rng.normal(size=(1000, 4))
    current[:, 2] += 1.0
    values = psi(reference, current)
    assert values.shape == (4,)
    assert int(np.argmax(values)) == 2
    assert psi(reference[:, 0], current[:, 0]).shape == (1,)


def test_psi_of_a_discrete_feature_is_finite() -> None:
    reference = np.repeat([0.0, 1.0], 500)
    assert np.isfinite(psi(reference, np.ones(100))).all()


def test_js_divergence_is_symmetric_zero_for_identical_one_for_disjoint() -> None:
    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.1, 0.3, 0.6])
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert 0.0 < js_divergence(p, q) < 1.0
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    # A distribution over a grown vocabulary is compared zero-padded.
    assert js_divergence(np.array([1.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert distribution(np.array([0, 0, 2]), 3).tolist() == pytest.approx([2 / 3, 0, 1 / 3])


def test_calibrated_psi_threshold_holds_its_false_alarm_rate_on_fresh_windows() -> None:
    rng = np.random.default_rng(2)
    d, window, false_alarm = 6, 300, 0.05
    reference = rng.normal(size=(1000, d))
    threshold = calibrate_psi_threshold(reference, window, d, false_alarm, n_boot=200, seed=3)
    trials = 300
    alarms = sum(psi(reference, rng.normal(size=(window, d))).max() > threshold
                 for _ in range(trials))
    # Binomial(300, 0.05) has sd ≈ 3.8 alarms: 0.05 + 0.05 is over 3.9 sd of margin.
    assert alarms / trials <= false_alarm + 0.05
    # ...and it is not so conservative that a real shift of one feature goes unseen.
    shifted = rng.normal(size=(window, d))
    shifted[:, 0] += 0.75
    assert psi(reference, shifted).max() > threshold


def test_the_max_over_features_raises_the_level_with_the_number_of_features() -> None:
    rng = np.random.default_rng(4)
    one = calibrate_psi_threshold(rng.normal(size=(1000, 1)), 300, 1, 0.01, seed=5)
    many = calibrate_psi_threshold(rng.normal(size=(1000, 16)), 300, 16, 0.01, seed=5)
    assert many > one


def test_calibrated_js_threshold_holds_its_false_alarm_rate() -> None:
    rng = np.random.default_rng(6)
    probs = np.array([0.5, 0.3, 0.2])
    reference = rng.choice(3, size=1000, p=probs)
    threshold = calibrate_js_threshold(reference, 300, 3, 0.05, n_boot=200, seed=7)
    ref_dist = distribution(reference, 3)
    trials = 300
    alarms = sum(js_divergence(ref_dist, distribution(rng.choice(3, 300, p=probs), 3))
                 > threshold for _ in range(trials))
    assert alarms / trials <= 0.05 + 0.05
    swapped = distribution(rng.choice(3, 300, p=probs[::-1]), 3)
    assert js_divergence(ref_dist, swapped) > threshold


def test_vectorised_js_rows_equal_the_scalar_divergence() -> None:
    rng = np.random.default_rng(8)
    p = distribution(rng.choice(4, size=200, p=[0.4, 0.3, 0.2, 0.1]), 4)
    windows = rng.multinomial(50, [0.1, 0.2, 0.3, 0.4], size=30)
    windows[0] = [50, 0, 0, 0]  # zero bins on one side only
    expected = [js_divergence(p, w.astype(float)) for w in windows]
    assert js_divergence_rows(p, windows) == pytest.approx(expected, abs=1e-12)


def test_vectorised_psi_max_of_resampled_windows_equals_psi() -> None:
    rng = np.random.default_rng(9)
    sample = np.concatenate([rng.normal(size=(300, 3)), rng.choice([0.0, 1.0], size=(300, 1))], 1)
    reference = rng.normal(size=(400, 4))
    reference[:, 3] = rng.choice([0.0, 1.0], size=400)  # a feature with 2 bins, not 10
    edges = quantile_edges(reference)
    bin_of_row = np.stack([np.searchsorted(e, sample[:, j], side="left")
                           for j, e in enumerate(edges)], axis=1)
    rows = rng.integers(0, len(sample), (5, 120))
    got = _psi_max_of_windows(bin_proportions(reference, edges), bin_of_row, rows, DEFAULT_BINS)
    expected = [psi(reference, sample[r]).max() for r in rows]
    assert got == pytest.approx(expected, rel=1e-9)


def test_tolerance_level_is_the_confidence_quantile_of_the_levels_each_reference_needs() -> None:
    # row r: windows' statistic uniform on 0..100·(r+1); its 0.99 quantile is 99·(r+1)
    draws = np.stack([np.arange(101) * (r + 1) for r in range(10)]).astype(float)
    assert _tolerance_level(draws, 0.01, 0.5) == 99 * 6  # position 4.5 of 0..9, rounded up
    assert _tolerance_level(draws, 0.01, 0.95) == 99 * 10
    reference = np.random.default_rng(10).normal(size=(600, 3))
    loose = calibrate_psi_threshold(reference, 200, 3, 0.01, n_boot=100, seed=1, confidence=0.5)
    strict = calibrate_psi_threshold(reference, 200, 3, 0.01, n_boot=100, seed=1, confidence=0.99)
    assert strict > loose
