"""Does the size of a training step's chunk matter once a model has been trained at another
size? `python -m models.bench_chunks`.

The service's learner trains each read in chunks (service/worker/loop.py: TRAIN_CHUNK and
train_chunks). This trains the service's default learner (online EWC, MLP 64→128→128→10) on a
learnable stream (the class is the argmax of a fixed random projection) in chunks of
`--warm-chunk` rows, then keeps training it in a repeating pattern of chunk sizes, and prints
the accuracy on a fixed test set every 100 steps. A pattern that keeps the warm model's
accuracy is safe to switch to; one that loses points makes every candidate worse than the
version it would replace, and the gate rejects them all.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.strategies import make_strategy

DIM, CLASSES = 64, 10
PATTERNS = ("32", "32,32,32,4", "25", "16")


class Stream:
    def __init__(self, seed: int) -> None:
        self.concept = np.random.default_rng(42).normal(size=(DIM, CLASSES))
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.rng.normal(size=(n, DIM)).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(np.argmax(x @ self.concept, axis=1))


def accuracy(learner: IncrementalLearner, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((learner.model.eval()(x).argmax(1) == y).float().mean())


def run(warm_chunk: int, pattern: list[int], warm_samples: int, steps: int,
        seed: int = 0) -> tuple[float, list[float]]:
    """(accuracy after warming up, accuracy every 100 steps of the pattern)."""
    torch.manual_seed(seed)
    stream = Stream(seed)
    test_x, test_y = stream.draw(2000)
    learner = IncrementalLearner(MLPConfig(DIM, (128, 128), CLASSES), make_strategy("online-ewc"),
                                 seed=seed)
    for _ in range(warm_samples // warm_chunk):
        learner.learn_many(*stream.draw(warm_chunk))
    warm = accuracy(learner, test_x, test_y)
    trace = []
    for step in range(steps):
        learner.learn_many(*stream.draw(pattern[step % len(pattern)]))
        if step % 100 == 99:
            trace.append(accuracy(learner, test_x, test_y))
    return warm, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-chunk", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    parser.add_argument("--warm-samples", type=int, default=40_000)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| warmed in chunks of | then chunks of | after warm-up | every 100 steps after | mean after |")
    print("|---|---|---|---|---|")
    for warm_chunk in args.warm_chunk:
        for text in args.patterns:
            warm, trace = run(warm_chunk, [int(v) for v in text.split(",")], args.warm_samples,
                              args.steps)
            print(f"| {warm_chunk} | {text} | {warm:.3f} | {', '.join(f'{a:.3f}' for a in trace)} "
                  f"| {np.mean(trace):.3f} |", flush=True)


if __name__ == "__main__":
    main()
