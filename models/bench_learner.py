"""Learner throughput, the same code on CPU and CUDA: `python -m models.bench_learner`.

For each device, model size and chunk size it streams synthetic labelled data through
IncrementalLearner.learn_many exactly as the service's learner does (new chunk ∪ a replay
sample from a reservoir, online EWC applied to the gradients, periodic consolidation) and
prints items/s, ms per learn_many, consolidation time, and the penalty's cost as a ratio to a
naive step measured side by side in the same run. Writes a markdown table with --markdown.

--precision fp32,bf16 trains each row in those precisions (IncrementalLearner's `precision`,
bf16 autocast; consolidation stays fp32). Default: fp32 on CPU; fp32 and bf16 on CUDA, where
the `xl` size (2048 wide, MNEMO_PRECISION=auto's bf16 threshold) is added too, so one command
on a GPU host measures where bf16 pays.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch

from models.learner import PRECISIONS, IncrementalLearner
from models.nets import MLPConfig
from models.replay import ReservoirBuffer
from models.strategies import make_strategy

SIZES = {"small": (64, (128, 128), 10), "large": (784, (1024, 1024), 100),
         "xl": (784, (2048, 2048), 100)}
# xl by default only on CUDA: it measures MNEMO_PRECISION=auto's bf16 threshold, which only
# CUDA uses, and on CPU it costs ~4x the large size's time per row.
DEFAULT_SIZES = {"cpu": ["small", "large"], "cuda": ["small", "large", "xl"]}
DEFAULT_PRECISIONS = {"cpu": ["fp32"], "cuda": ["fp32", "bf16"]}


@dataclass
class Row:
    device: str
    precision: str
    size: str
    chunk: int
    strategy: str
    items_per_s: float
    ms_per_learn_many: float
    consolidate_ms: float
    naive_ratio: float  # this strategy's step time / naive's, same run


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _stream(dim: int, classes: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(classes, dim, generator=gen) * 3
    y = torch.randint(classes, (n,), generator=gen)
    return centres[y] + torch.randn(n, dim, generator=gen), y


def _time_learner(device: str, precision: str, size: str, chunk: int, strategy: str,
                  seconds: float) -> tuple[float, float]:
    dim, hidden, classes = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    learner = IncrementalLearner(MLPConfig(dim, hidden, classes), make_strategy(strategy),
                                 device=device, precision=precision)
    buffer = ReservoirBuffer(1000, dim)
    x, y = _stream(dim, classes, 20_000, gen)
    for i in range(1000):
        buffer.put(i, x[i], int(y[i]))
    learner.consolidate(x[:512], y[:512])  # a non-zero penalty from the start
    consolidate = []
    for _ in range(3):
        start = time.perf_counter()
        learner.consolidate(x[:512], y[:512])
        _sync(device)
        consolidate.append(time.perf_counter() - start)
    # warm-up, then timed passes until `seconds` have elapsed
    for i in range(5):
        learner.learn_many(x[i * chunk : (i + 1) * chunk], y[i * chunk : (i + 1) * chunk], buffer)
    _sync(device)
    calls, items, start = 0, 0, time.perf_counter()
    offset = 0
    while time.perf_counter() - start < seconds:
        if offset + chunk > len(y):
            offset = 0
        learner.learn_many(x[offset : offset + chunk], y[offset : offset + chunk], buffer)
        offset += chunk
        calls += 1
        items += chunk
        if calls % 20 == 0:
            _sync(device)
    _sync(device)
    elapsed = time.perf_counter() - start
    return elapsed / calls, min(consolidate)


def run(devices: list[str], sizes: list[str] | None, chunks: list[int], seconds: float,
        precisions: list[str] | None = None) -> list[Row]:
    """Rows per device, size, chunk and precision; None: that device's defaults."""
    rows = []
    for device in devices:
        kind = torch.device(device).type
        for size in sizes or DEFAULT_SIZES[kind]:
            for chunk in chunks:
                for precision in precisions or DEFAULT_PRECISIONS[kind]:
                    naive, _ = _time_learner(device, precision, size, chunk, "naive", seconds)
                    step, consolidate = _time_learner(device, precision, size, chunk,
                                                      "online-ewc", seconds)
                    rows.append(Row(device, precision, size, chunk, "online-ewc+replay",
                                    round(chunk / step, 1), round(step * 1000, 3),
                                    round(consolidate * 1000, 2), round(step / naive, 3)))
                    print(json.dumps(asdict(rows[-1])), flush=True)
    return rows


def markdown(rows: list[Row]) -> str:
    head = ("| device | precision | model | chunk | items/s | ms per learn_many "
            "| consolidate 512 (ms) | EWC step / naive step |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r.device} | {r.precision} | {r.size} {SIZES[r.size][0]}→{'→'.join(map(str, SIZES[r.size][1]))}"
        f"→{SIZES[r.size][2]} | {r.chunk} | {r.items_per_s:,.0f} | {r.ms_per_learn_many} "
        f"| {r.consolidate_ms} | {r.naive_ratio} |\n"
        for r in rows
    )
    return head + body


def _precisions(text: str) -> list[str]:
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in wanted if p not in PRECISIONS]
    if bad or not wanted:
        raise argparse.ArgumentTypeError(f"precisions are {', '.join(PRECISIONS)}; got {text!r}")
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=None,
                        help="default: small large, and xl on cuda")
    parser.add_argument("--precision", type=_precisions, default=None,
                        help="comma-separated, e.g. fp32,bf16; default: fp32 on cpu, both on cuda")
    parser.add_argument("--chunks", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=str, default=None, help="write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU thread(s), GPU: {gpu}", flush=True)
    rows = run(devices, args.sizes, args.chunks, args.seconds, args.precision)
    table = markdown(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(f"torch {torch.__version__}, GPU: {gpu}, {args.threads} CPU thread(s)\n\n")
            fh.write(table)


if __name__ == "__main__":
    main()
