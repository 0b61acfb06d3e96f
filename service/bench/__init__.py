"""`python -m service.bench` (to be wired as `python -m service bench`; `make bench`): the
continual-learning benchmark, run through the same learner code as the service.

One pass, batches of 16, over permuted digits (domain-incremental), split digits (class- and
task-incremental) and a drifting stream (label swap, gradual drift, covariate shift), for every
strategy x buffer size x seed, plus joint training as the upper bound. Writes results.json,
results.md and PNG plots to --out, and with --benchmarks the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# scenario -> the BENCHMARKS.md heading of its table
OWN_TABLES = {"transfer": "## Transfer (`python -m service bench --scenarios transfer`)",
              "heads": "## Per-tag heads (`python -m service bench --scenarios heads`)",
              "expand": "## Expandable network (`python -m service bench --scenarios expand`)",
              "meta": "## Meta-learned starts (`python -m service bench --scenarios meta`)",
              "soft": "## Soft sharing across tags (`python -m service bench --scenarios soft`)"}
ALIASES = {"split-class": "split", "split-task": "split", "permuted-digits": "permuted",
           "split-digits": "split", "drifting": "drift"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnemo bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", nargs="+", default=["permuted", "split", "drift"],
                   help="permuted, split (class- and task-incremental), drift; transfer, heads, expand, "
                   "soft, meta (own tables)")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="default: every name from models.strategies, alone and with +replay")
    p.add_argument("--buffers", nargs="+", type=int, default=[200, 1000], help="buffer sizes")
    p.add_argument("--buffer-kinds", nargs="+", default=None,
                   help="default: models.replay.BUFFER_NAMES (other kinds only with replay)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--quick", action="store_true",
                   help="1 seed, naive and replay, no buffer sweep, 2 joint epochs (tests)")
    p.add_argument("--out", type=Path, default=Path("bench_results"))
    p.add_argument("--sweep", nargs="*", type=int, default=None,
                   help="buffer sizes for the default strategy's accuracy-vs-buffer curve")
    p.add_argument("--joint-epochs", type=int, default=5)
    p.add_argument("--publish-every", type=int, default=None,
                   help="samples between publishes (default: the service's publish_every_samples)")
    p.add_argument("--hparams", type=Path, default=None, help="frozen hyperparameters (JSON)")
    p.add_argument("--tune", action="store_true",
                   help="choose hyperparameters on the tuning streams, write --hparams, stop")
    p.add_argument("--benchmarks", type=Path, default=None, help="splice the tables into this file")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--rerender", action="store_true",
                   help="only rewrite the tables and plots from --out/results.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the learner uses 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from service.bench import suite, tuning
    from service.bench.runner import DEFAULTS

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    hparams_path = args.hparams or suite.HPARAMS_FILE
    strategies = args.strategies or (["naive", "replay"] if args.quick else suite.strategy_names())
    if args.tune:
        tuning.tune(strategies, hparams_path)
        print(f"wrote {hparams_path}")
        return 0
    if args.rerender:  # tables and plots again from a finished run's results.json
        saved = json.loads((args.out / "results.json").read_text())
        meta, results = saved["meta"], saved["runs"]
        meta.setdefault("buffer", DEFAULTS.buffer)
        meta.setdefault("capacities", args.buffers)
        return _write(args, meta, results)
    scenarios = list(dict.fromkeys(ALIASES.get(s, s) for s in args.scenarios))
    # Scenarios with their own protocol and table (an offline checkpoint; per-tag heads).
    for name in [s for s in scenarios if s in OWN_TABLES]:
        scenarios.remove(name)
        _own_table(name, args, argv)
    if not scenarios:
        return 0
    plan = suite.Plan(
        scenarios=scenarios, strategies=strategies, capacities=args.buffers,
        seeds=args.seeds[:1] if args.quick else args.seeds,
        kinds=args.buffer_kinds or ([DEFAULTS.buffer] if args.quick else suite.buffer_kinds()),
        sweep=() if args.quick else tuple(suite.SWEEP if args.sweep is None else args.sweep),
        joint_epochs=min(args.joint_epochs, 2) if args.quick else args.joint_epochs,
        hparams=suite.load_hparams(hparams_path),
        publish_every=args.publish_every or DEFAULTS.publish_every_samples)
    results = suite.run_plan(plan)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python -m service bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "date": dt.date.today().isoformat(), "threads": args.threads,
            "hparams": f"{hparams_path.name} ({plan.hparams.get('source', 'defaults')})",
            "default": suite.default_strategy(), "frozen": plan.hparams,
            "buffer": DEFAULTS.buffer, "capacities": args.buffers}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "hparams": plan.hparams,
                                                       "runs": results}) + "\n")
    return _write(args, meta, results)


def _own_table(name: str, args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    import importlib

    from service.bench import report

    module = importlib.import_module(f"service.bench.{name}")
    results = module.run(args.seeds[:1] if args.quick else args.seeds)
    command = "python -m service bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    table = module.markdown(results, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(table + "\n")
    print(table)
    if args.benchmarks is not None:
        report.splice(args.benchmarks, table, module.START, module.END, OWN_TABLES[name])


def _write(args: argparse.Namespace, meta: dict[str, Any], results: list[dict[str, Any]]) -> int:
    from service.bench import plots, report
    from service.bench.runner import DEFAULTS

    capacities = meta["capacities"]
    table = report.markdown(results, capacities, meta)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    if not args.no_plots:
        capacity = DEFAULTS.buffer_size if DEFAULTS.buffer_size in capacities else capacities[-1]
        written = plots.write_all(results, capacity, meta["buffer"], meta["default"], args.out)
        print("plots: " + (", ".join(written) or "none (pip install matplotlib)"))
    if args.benchmarks is not None:
        report.splice(args.benchmarks, table)
        print(f"updated {args.benchmarks}")
    return 0
