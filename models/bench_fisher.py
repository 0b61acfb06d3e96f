"""`python -m models.bench_fisher`: the diagonal Fisher of the default MLP (64→128→128→10) on
512 samples, per-sample (vmapped) against the affine-layer path diagonal_fisher takes for a
plain MLP, timed alternately on one torch thread, with their largest relative difference."""

from __future__ import annotations

import time

import torch

from models.nets import MLPConfig, build_model
from models.strategies.base import trainable_parameters
from models.strategies.fisher import _cross_entropy, diagonal_fisher, per_sample_grad_mean


def main(rounds: int = 10, samples: int = 512) -> None:
    torch.set_num_threads(1)
    model = build_model(MLPConfig(64, (128, 128), 10), seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(samples, 64, generator=g), torch.randint(10, (samples,), generator=g)
    model.standardizer.update(x)
    params = trainable_parameters(model)
    paths = {
        "per-sample (vmap)": lambda: per_sample_grad_mean(model, params, _cross_entropy, (x, y),
                                                          torch.square),
        "affine layers": lambda: diagonal_fisher(model, params, x, y),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    results = {name: f() for name, f in paths.items()}  # warm-up
    for _ in range(rounds):
        for name, f in paths.items():
            start = time.process_time()
            f()
            times[name].append(time.process_time() - start)
    slow, fast = (sorted(t)[len(t) // 2] for t in times.values())
    for name, t in times.items():
        print(f"{name:>18}: median {1000 * sorted(t)[len(t) // 2]:.1f} ms CPU")
    diff = max(float(((results["affine layers"][k] - v).abs() / v.abs().clamp_min(1e-12)).max())
               for k, v in results["per-sample (vmap)"].items() if k in results["affine layers"])
    print(f"speed-up {slow / fast:.1f}×; largest relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
