"""Distribution-drift statistics with alarm levels calibrated from the reference itself.

Pure numpy: PSI per feature over quantile bins of the reference, Jensen–Shannon divergence of
two discrete distributions, and bootstrap thresholds for a stated false-alarm rate.

Calibration (both statistics): each bootstrap replicate draws a pseudo-reference of the
reference's size and a pseudo-current window of the window's size, both with replacement from
the reference, rebuilds the bins from the pseudo-reference and computes the statistic. That is
the statistic's null distribution when nothing changed, including the noise of the finite
reference (bins and proportions), not only the window's. For PSI the replicate's statistic is
the max over features, so the (1 − false_alarm) quantile is a family-wise level: the chance
that *any* feature alarms on an unshifted window is about false_alarm, whatever the number of
features (the max is the multiple-comparison correction, tighter than Bonferroni because
it keeps the features' correlation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EPSILON = 1e-4  # added to every bin's proportion so an empty bin gives a finite log-ratio
DEFAULT_BINS = 10


def _as_2d(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


def quantile_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> list[np.ndarray]:
    """Per feature, the inner bin edges at the reference's 1/bins … (bins-1)/bins quantiles
    (duplicates dropped, so a discrete feature gets fewer, non-empty bins)."""
    ref = _as_2d(reference)
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    inner = np.quantile(ref, qs, axis=0)  # (bins-1, d)
    return [np.unique(inner[:, j]) for j in range(ref.shape[1])]


def bin_proportions(values: np.ndarray, edges: list[np.ndarray]) -> list[np.ndarray]:
    """Per feature, the share of rows in each bin (bin i: edges[i-1] < v <= edges[i]), plus
    EPSILON, renormalised."""
    data = _as_2d(values)
    out = []
    for j, inner in enumerate(edges):
        counts = np.bincount(np.searchsorted(inner, data[:, j], side="left"),
                             minlength=len(inner) + 1).astype(np.float64)
        share = counts / max(len(data), 1) + EPSILON
        out.append(share / share.sum())
    return out


def psi_from_proportions(reference: list[np.ndarray], current: list[np.ndarray]) -> np.ndarray:
    return np.array([float(np.sum((c - r) * np.log(c / r)))
                     for r, c in zip(reference, current, strict=True)])


def psi(reference: np.ndarray, current: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Population stability index per feature, shape (d,) (a 1-D input is one feature):
    Σ (c − r)·ln(c / r) over quantile bins of the reference. 0 for identical samples."""
    edges = quantile_edges(reference, bins)
    return psi_from_proportions(bin_proportions(reference, edges), bin_proportions(current, edges))


def distribution(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Class shares of a vector of class indices (uniform-free: all zeros stay zeros)."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=n_classes)
    counts = counts[:n_classes].astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (base 2): symmetric, 0 for identical distributions,
    1 for disjoint ones. Inputs are normalised; the shorter one is zero-padded."""
    size = max(len(p), len(q))
    a = np.zeros(size)
    b = np.zeros(size)
    a[: len(p)] = p
    b[: len(q)] = q
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("js_divergence needs two non-empty distributions")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return float(min(1.0, max(0.0, (kl(a) + kl(b)) / 2)))


def _quantile(values: np.ndarray, false_alarm: float) -> float:
    return float(np.quantile(values, 1.0 - false_alarm, method="higher"))


def _bootstrap(data: np.ndarray, window: int, n_boot: int, seed: int | None,
               statistic: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    """`statistic(pseudo_reference, pseudo_window)` over `n_boot` rounds, both resampled from
    the reference itself: the spread includes the finite reference's noise, not only the
    window's."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        pseudo_ref = data[rng.integers(0, len(data), len(data))]
        pseudo_cur = data[rng.integers(0, len(data), window)]
        out[b] = statistic(pseudo_ref, pseudo_cur)
    return out


def calibrate_psi_threshold(reference: np.ndarray, window: int, n_features: int | None = None,
                            false_alarm: float = 0.01, n_boot: int = 200,
                            seed: int | None = None, bins: int = DEFAULT_BINS) -> float:
    """The psi_max level an unshifted window of `window` rows exceeds with probability about
    `false_alarm` (family-wise over all features: see the module note)."""
    ref = _as_2d(reference)
    if n_features is not None and n_features != ref.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} features, not {n_features}")
    if len(ref) < 2 or window < 1:
        raise ValueError("calibration needs a reference of 2+ rows and a window of 1+")
    maxima = _bootstrap(ref, window, n_boot, seed,
                        lambda pseudo_ref, pseudo_cur: psi(pseudo_ref, pseudo_cur, bins).max())
    return _quantile(maxima, false_alarm)


def calibrate_js_threshold(reference: np.ndarray, window: int, n_classes: int,
                           false_alarm: float = 0.01, n_boot: int = 200,
                           seed: int | None = None) -> float:
    """The JS level between the reference's and a `window`-sized unshifted window's class
    distributions, exceeded with probability about `false_alarm`."""
    classes = np.asarray(reference, dtype=np.int64)
    if len(classes) < 1 or window < 1:
        raise ValueError("calibration needs a non-empty reference and a window of 1+")
    values = _bootstrap(classes, window, n_boot, seed, lambda pseudo_ref, pseudo_cur: js_divergence(
        distribution(pseudo_ref, n_classes), distribution(pseudo_cur, n_classes)))
    return _quantile(values, false_alarm)
