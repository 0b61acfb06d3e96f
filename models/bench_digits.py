"""One pass over scikit-learn's digits, streamed the way the service feeds the learner.

python -m models.bench_digits [--seeds 0 1 2] [--strategy online-ewc] [--lr 2e-3] ...

Per batch of 16: about 10% goes to a holdout that is never trained on, the rest is inserted
into a 500-slot reservoir (random u) and learned by the learner's stream step (models/stream.py),
which consolidates every 500 trained samples on a replay sample. Prints accuracy on a fixed 20% test split and the cost
of learn_many with one torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from models.holdout import Holdout
from models.learner import (
    DEFAULT_LR,
    DEFAULT_REPLAY_SIZE,
    DEFAULT_STEPS_PER_BATCH,
    IncrementalLearner,
)
from models.nets import MLPConfig
from models.replay import ReservoirBuffer
from models.strategies import make_strategy
from models.strategies.ewc import DEFAULT_GAMMA, DEFAULT_LAM
from models.stream import StreamParams, StreamStep


def run_digits(seed: int = 0, strategy: str = "online-ewc", hidden: tuple[int, ...] = (128, 128),
               batch: int = 16, buffer_size: int = 500, consolidate_every: int = 500,
               holdout_frac: float = 0.1, device: str = "cpu",
               **learner_kw: Any) -> dict[str, float]:
    from sklearn.datasets import load_digits  # dev-only dependency, so imported lazily
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_all = data.data.astype(np.float32)
    y_all = data.target.astype(np.int64)
    # The test split is fixed (random_state=0); the seed only changes the stream and the model.
    x_stream, x_test, y_stream, y_test = train_test_split(
        x_all, y_all, test_size=0.2, random_state=0, stratify=y_all)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_stream))
    x_stream, y_stream = torch.from_numpy(x_stream[order]), torch.from_numpy(y_stream[order])

    strat_kw = {k: learner_kw.pop(k) for k in ("lam", "gamma") if k in learner_kw}
    learner = IncrementalLearner(MLPConfig(64, hidden), make_strategy(strategy, **strat_kw),
                                 device=device, seed=seed, **learner_kw)
    # The learner process's own stream step; no detector and no idle time here: this measures
    # the learning core on a stationary stream.
    step = StreamStep(learner, ReservoirBuffer(buffer_size, 64), None, Holdout(1, 64),
                      StreamParams(consolidate_every=consolidate_every, rehearsal=0.0),
                      use_replay=True, routes_by_tag=False, seed=seed)
    index: dict[int, int] = {}  # label -> class index in order of first appearance, as served
    times: list[float] = []
    trained = 0
    for start in range(0, len(x_stream), batch):
        xb, yb = x_stream[start : start + batch], y_stream[start : start + batch]
        train = torch.from_numpy(rng.random(len(xb)) >= holdout_frac)
        xb, yb = xb[train], yb[train]
        if len(xb) == 0:
            continue
        yb = torch.tensor([index.setdefault(int(v), len(index)) for v in yb])
        for xi, yi in zip(xb, yb, strict=True):
            step.insert(xi.numpy(), int(yi), float(rng.random()))
        t0 = time.perf_counter()
        step.learn(xb, yb, num_classes=len(index))
        times.append(time.perf_counter() - t0)
        trained += len(xb)
    consolidations = list(step.consolidations)
    mapped = torch.tensor([index.get(int(v), -1) for v in y_test])
    pred = learner.predict_proba(torch.from_numpy(x_test)).argmax(1)
    return {"accuracy": float((pred == mapped).float().mean()), "trained": float(trained),
            "ms_per_learn_many": 1e3 * statistics.mean(times),
            "ms_p95": 1e3 * float(np.quantile(times, 0.95)),
            "ms_per_consolidate": 1e3 * statistics.mean(consolidations or [0.0])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategy", default="online-ewc")
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--replay-size", type=int, default=DEFAULT_REPLAY_SIZE)
    ap.add_argument("--steps-per-batch", type=int, default=DEFAULT_STEPS_PER_BATCH)
    ap.add_argument("--lam", type=float, default=None,
                    help=f"EWC strength (ewc/online-ewc only; default {DEFAULT_LAM})")
    ap.add_argument("--gamma", type=float, default=None,
                    help=f"online-EWC decay (online-ewc only; default {DEFAULT_GAMMA})")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    kw: dict[str, Any] = {"lr": a.lr, "replay_size": a.replay_size,
                          "steps_per_batch": a.steps_per_batch}
    # Only the arguments the chosen strategy takes: si/mas/lwf have their own strengths.
    if a.lam is not None:
        kw["lam"] = a.lam
    if a.gamma is not None:
        kw["gamma"] = a.gamma
    results = []
    for seed in a.seeds:
        r = run_digits(seed, a.strategy, tuple(a.hidden), device=a.device, **kw)
        results.append(r)
        print(f"seed {seed}: accuracy {r['accuracy']:.4f}  learn_many "
              f"{r['ms_per_learn_many']:.2f} ms (p95 {r['ms_p95']:.2f})  consolidate "
              f"{r['ms_per_consolidate']:.1f} ms  trained {r['trained']:.0f}")
    accs = [r["accuracy"] for r in results]
    ms = [r["ms_per_learn_many"] for r in results]
    print(f"mean accuracy {statistics.mean(accs):.4f} (min {min(accs):.4f}), "
          f"mean {statistics.mean(ms):.2f} ms per learn_many, threads={a.threads}")


if __name__ == "__main__":
    main()
