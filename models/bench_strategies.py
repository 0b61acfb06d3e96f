"""Per-step cost of every strategy against naive, side by side: `python -m models.bench_strategies`.

Every strategy gets its own learner on the same data (new chunk ∪ a replay sample, as the
service trains), consolidated and published once so that its penalty and loss term are live.
Timing rounds are interleaved across strategies, so a machine busy with other work slows them
all alike; each strategy's time is its best round (the least disturbed by other processes, as
timeit advises), the median round is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.replay import ReservoirBuffer
from models.strategies import STRATEGY_NAMES, make_strategy

SIZES = {"small": (64, (128, 128), 10), "large": (784, (1024, 1024), 100)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _setup(name: str, size: str, device: str, replay: bool,
           data: tuple[torch.Tensor, torch.Tensor]) -> tuple[IncrementalLearner, ReservoirBuffer | None]:
    dim, hidden, classes = SIZES[size]
    learner = IncrementalLearner(MLPConfig(dim, hidden, classes), make_strategy(name),
                                 device=device, replay_size=64 if replay else 0)
    x, y = data
    buffer = None
    if replay:
        buffer = ReservoirBuffer(1000, dim)
        for i in range(1000):
            buffer.put(i, x[i], int(y[i]))
    for i in range(5):  # warm-up; gives SI a path integral before it consolidates
        learner.learn_many(x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32], buffer)
    learner.consolidate(x[:128], y[:128])  # enough for live penalties; not what is timed
    learner.on_publish()
    return learner, buffer


def run(size: str, chunk: int, device: str, replay: bool, rounds: int,
        calls: int) -> dict[str, list[float]]:
    dim, _, classes = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=gen) * 3
    y = torch.randint(classes, (4096,), generator=gen)
    x = centres[y] + torch.randn(4096, dim, generator=gen)
    setups = {name: _setup(name, size, device, replay, (x, y)) for name in STRATEGY_NAMES}
    times: dict[str, list[float]] = {name: [] for name in STRATEGY_NAMES}
    for r in range(rounds):
        for name, (learner, buffer) in setups.items():
            _sync(device)
            start = time.perf_counter()
            for i in range(calls):
                j = ((r * calls + i) * chunk) % (len(y) - chunk)
                learner.learn_many(x[j : j + chunk], y[j : j + chunk], buffer)
            _sync(device)
            times[name].append((time.perf_counter() - start) / calls)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-replay", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = run(args.size, args.chunk, args.device, not args.no_replay, args.rounds, args.calls)
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    dim, hidden, classes = SIZES[args.size]
    print(f"# torch {torch.__version__}, {args.device}, {args.threads} thread(s), model "
          f"{dim}→{'→'.join(map(str, hidden))}→{classes}, chunk {args.chunk}, "
          f"replay {'off' if args.no_replay else 64}, {args.rounds} rounds of {args.calls} calls")
    print("| strategy | ms per learn_many (best round) | / naive | median round / naive |\n"
          "|---|---|---|---|")
    for name in times:
        print(f"| {name} | {best[name] * 1000:.3f} | {best[name] / best['naive']:.2f} "
              f"| {median[name] / median['naive']:.2f} |")


if __name__ == "__main__":
    main()
