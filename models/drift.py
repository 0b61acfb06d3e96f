"""Concept-drift detectors on the prequential error stream (1 = the served model got it wrong).

Both detectors answer `update(error) -> bool` (True when the error rate has risen), keep
`n_detections`, and save their statistics as tensors so they can travel inside the learner
state (a restarted learner keeps its detector). Hyperparameters are constructor arguments,
not state: the parameters are the config.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class DriftDetector(Protocol):
    n_detections: int

    def update(self, error: float) -> bool: ...

    def reset(self) -> None: ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, d: dict[str, Tensor]) -> None: ...


def _scalars(d: dict[str, Tensor], key: str, n: int) -> list[float]:
    if set(d) - {key, "adwin.buckets"} or key not in d or d[key].numel() != n:
        raise ValueError(f"not a {key.split('.')[0]} detector state: keys {sorted(d)}")
    return [float(v) for v in d[key].reshape(-1)]


class PageHinkley:
    """Page-Hinkley test for an increase of the mean (Page 1954; as used by Gama et al. 2013).

    m_t = α·m_{t-1} + (x_t − x̄_t − δ); alarm when m_t − min m > threshold. δ is the
    magnitude of change tolerated; α < 1 fades old deviations so a long quiet history does
    not bury a late change. After an alarm the statistics restart at the new level.
    """

    def __init__(self, delta: float = 0.005, threshold: float = 50.0, min_samples: int = 30,
                 alpha: float = 1 - 1e-4) -> None:
        if delta < 0 or threshold <= 0 or min_samples < 1 or not 0 < alpha <= 1:
            raise ValueError("need delta >= 0, threshold > 0, min_samples >= 1, 0 < alpha <= 1")
        self.delta, self.threshold, self.min_samples, self.alpha = delta, threshold, min_samples, alpha
        self.n_detections = 0
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sum = 0.0
        self.min_sum = 0.0

    def update(self, error: float) -> bool:
        x = float(error)
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.sum = self.alpha * self.sum + (x - self.mean - self.delta)
        self.min_sum = min(self.min_sum, self.sum)
        if self.n >= self.min_samples and self.sum - self.min_sum > self.threshold:
            self.n_detections += 1
            self.reset()
            return True
        return False

    def state_dict(self) -> dict[str, Tensor]:
        values = [self.n, self.mean, self.sum, self.min_sum, self.n_detections]
        return {"ph.scalars": torch.tensor(values, dtype=torch.float64)}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        n, self.mean, self.sum, self.min_sum, det = _scalars(d, "ph.scalars", 5)
        self.n, self.n_detections = int(n), int(det)


class ADWIN:
    """ADWIN2 (Bifet & Gavaldà 2007): an adaptive window kept as an exponential histogram.

    Row i holds at most `max_buckets` buckets of 2**i items, each (sum, variance), so the
    window W costs O(M log W) memory. Every `clock` items each cut of W into old | new is
    tested with the paper's bound ε = sqrt(2/m σ²_W ln(2/δ')) + 2/(3m) ln(2/δ'), δ' = δ/ln W,
    1/m = 1/n0 + 1/n1; the oldest bucket is dropped while some cut exceeds it. The window
    shrinks on a change either way, but only a *rise* of the error is reported unless
    `two_sided`: a model recovering after drift is not a new drift.
    """

    def __init__(self, delta: float = 0.002, max_buckets: int = 5, clock: int = 32,
                 min_window: int = 5, grace: int = 10, two_sided: bool = False) -> None:
        if not 0 < delta < 1 or max_buckets < 2 or clock < 1 or min_window < 1:
            raise ValueError("need 0 < delta < 1, max_buckets >= 2, clock >= 1, min_window >= 1")
        self.delta, self.max_buckets, self.clock = delta, max_buckets, clock
        self.min_window, self.grace, self.two_sided = min_window, grace, two_sided
        self.n_detections = 0
        self.reset()

    def reset(self) -> None:
        self._rows: list[list[tuple[float, float]]] = [[]]  # oldest bucket first in each row
        self.total = 0.0
        self.variance = 0.0  # sum of squared deviations over the window
        self.width = 0
        self.tick = 0

    @property
    def estimate(self) -> float:
        return self.total / self.width if self.width else 0.0

    def update(self, error: float) -> bool:
        x = float(error)
        if self.width:
            mean = self.total / self.width
            self.variance += self.width * (x - mean) ** 2 / (self.width + 1)
        self.width += 1
        self.total += x
        self._rows[0].append((x, 0.0))
        self._compress()
        self.tick += 1
        if self.tick % self.clock or self.width <= self.grace:
            return False
        rose = False
        while (sign := self._find_cut()) is not None:
            rose = rose or sign > 0 or self.two_sided
            self._drop_oldest()
        if rose:
            self.n_detections += 1
        return rose

    def _compress(self) -> None:
        for i, row in enumerate(self._rows):
            if len(row) <= self.max_buckets:
                return
            (u1, v1), (u2, v2) = row.pop(0), row.pop(0)
            n = 2.0**i
            merged = (u1 + u2, v1 + v2 + n * n * (u1 / n - u2 / n) ** 2 / (2 * n))
            if i + 1 == len(self._rows):
                self._rows.append([])
            # Row i+1 holds older items than row i, so the merged bucket is its newest.
            self._rows[i + 1].append(merged)

    def _buckets_oldest_first(self) -> list[tuple[float, float, float]]:
        return [(2.0**i, u, v) for i in range(len(self._rows) - 1, -1, -1)
                for u, v in self._rows[i]]

    def _find_cut(self) -> int | None:
        """+1 / −1 if some cut shows the newer part's mean higher / lower, else None."""
        sigma2 = self.variance / self.width
        ln_term = math.log(2 * math.log(self.width) / self.delta)
        n0 = u0 = 0.0
        for n, u, _ in self._buckets_oldest_first()[:-1]:
            n0, u0 = n0 + n, u0 + u
            n1, u1 = self.width - n0, self.total - u0
            if n0 < self.min_window or n1 < self.min_window:
                continue
            diff = u1 / n1 - u0 / n0
            m_inv = 1 / n0 + 1 / n1
            eps = math.sqrt(2 * m_inv * sigma2 * ln_term) + 2 / 3 * m_inv * ln_term
            if abs(diff) > eps:
                return 1 if diff > 0 else -1
        return None

    def _drop_oldest(self) -> None:
        i = len(self._rows) - 1
        u, v = self._rows[i].pop(0)
        n = 2.0**i
        if not self._rows[i] and i > 0:
            self._rows.pop()
        self.width -= int(n)
        self.total -= u
        if self.width:
            rest_mean = self.total / self.width
            self.variance -= v + n * self.width * (u / n - rest_mean) ** 2 / (n + self.width)
            self.variance = max(self.variance, 0.0)  # float cancellation must not go negative
        else:
            self.variance = 0.0

    def state_dict(self) -> dict[str, Tensor]:
        rows = [[i, u, v] for i, row in enumerate(self._rows) for u, v in row]
        return {"adwin.scalars": torch.tensor([self.total, self.variance, self.width, self.tick,
                                               self.n_detections], dtype=torch.float64),
                "adwin.buckets": torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        total, variance, width, tick, det = _scalars(d, "adwin.scalars", 5)
        buckets = d.get("adwin.buckets")
        if buckets is None or buckets.dim() != 2 or buckets.shape[1] != 3:
            raise ValueError("ADWIN state lacks its (K, 3) bucket table")
        rows: list[list[tuple[float, float]]] = [[]]
        for i, u, v in buckets.tolist():
            while len(rows) <= int(i):
                rows.append([])
            rows[int(i)].append((u, v))
        self._rows, self.total, self.variance = rows, total, variance
        self.width, self.tick, self.n_detections = int(width), int(tick), int(det)


DETECTOR_NAMES = ("page-hinkley", "adwin")


def make_detector(name: str, **kw: Any) -> DriftDetector:
    if name == "page-hinkley":
        return PageHinkley(**kw)
    if name == "adwin":
        return ADWIN(**kw)
    raise ValueError(f"unknown drift detector {name!r}; known: {', '.join(DETECTOR_NAMES)}")
