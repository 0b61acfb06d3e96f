"""`make bench-e2e`: continual learning as the running service serves it, River beside it.

Each scenario (load_tests/learning_streams.py; of records: load_tests/record_streams.py)
gets a fresh `python -m service run` on the embedded server, a data directory of its own and
free loopback ports, with the service's defaults plus what the scenario must declare. Its
stream goes through predict and feedback at a fixed label rate (load_tests/served_stream.py);
the River peers then run test-then-train on the same stream (load_tests/river_peers.py).
Tables: load_tests/learning_table.py. `--scenarios agrawal stagger telco` (`make
bench-records`) runs the streams of records alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from load_tests import learning_streams, learning_table, record_streams
from load_tests.learning_scores import summarize
from load_tests.learning_streams import Scenario
from load_tests.processes import ROOT
from load_tests.river_peers import PEERS, run_peer
from load_tests.served_stream import (
    RATE,
    ROWS,
    drive,
    registry_summary,
    running_service,
    scenario_settings,
    service_env,
)

SCENARIOS = {**learning_streams.SCENARIOS, **record_streams.SCENARIOS}

# The defaults that decide what is learned and served, reported beside each table.
LEARNING_SETTINGS = ("model", "hidden", "strategy", "learning_rate", "buffer", "buffer_size", "drift_detector",
                     "holdout_fraction", "gate_tolerance", "publish_first_samples",
                     "publish_every_samples", "publish_every_seconds",
                     "consolidate_every_samples", "heads", "device")

# Settings whose default depends on the inputs (vectors or records): what they resolve to.
RESOLVED = {"learning_rate": "effective_learning_rate",
            "consolidate_every_samples": "effective_consolidate_every"}


def effective_defaults(env: dict[str, str]) -> dict[str, Any]:
    """The learning settings the service starts with under `env` (the ones it knows)."""
    from service.config import load_settings  # the same tree the service runs from

    settings = load_settings(env)
    return {name: getattr(settings, RESOLVED.get(name, name))
            for name in LEARNING_SETTINGS if hasattr(settings, name)}


def _defaults_text(defaults: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    return " ".join(f"MNEMO_{k.upper()}={text(v)}" for k, v in defaults.items())


def _names(scenario: Scenario) -> dict[str, Any]:
    names = {"phases": [p.name for p in scenario.phases], "tasks": [t.name for t in scenario.tests],
             "first": scenario.first, "overall": scenario.overall.name if scenario.overall else None}
    return names if scenario.margin is None else {**names, "margin": scenario.margin}


def _summary(run: Any, scenario: Scenario) -> dict[str, Any]:
    return summarize(run, [p.name for p in scenario.phases], [len(p) for p in scenario.phases],
                     [t.name for t in scenario.tests], scenario.first)


def run_service(scenario: Scenario, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The scenario through a fresh service: its figures, the registry, the stream's pace."""
    settings = {**scenario_settings(scenario), **args.set}
    env = service_env(settings, workdir / "data")
    began = time.monotonic()
    with running_service(env, workdir / "service.log") as client:
        run, stream = drive(client, scenario, args.rate, args.rows)
        registry = registry_summary(client)
    return {"settings": settings, "defaults": _defaults_text(effective_defaults(env)),
            "mnemo": _summary(run, scenario), "stream": stream, "registry": registry,
            "service_seconds": round(time.monotonic() - began, 1)}


def run_scenario(key: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    scenario = SCENARIOS[key](args.seed)
    print(f"{scenario.name}: {scenario.labels} labels at {args.rate:g}/s", flush=True)
    served = run_service(scenario, args, workdir / key)
    service_seconds = served.pop("service_seconds")
    peers = {name: _summary(run_peer(make, scenario, args.seed), scenario)
             for name, make in PEERS.items()}
    result = {"scenario": scenario.name, "key": key, "about": scenario.about, **_names(scenario),
              **served, "peers": peers,
              "seconds": {"service": service_seconds,
                          **{name: p["seconds"] for name, p in peers.items()}}}
    print(learning_table.scenario_table(result), flush=True)
    return result


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    meta = {"rate": args.rate, "rows": args.rows, "seed": args.seed, "commit": _commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}", "note": args.note}
    with tempfile.TemporaryDirectory(prefix="mnemo-bench-e2e-") as tmp:
        workdir = Path(args.logs) if args.logs else Path(tmp)
        scenarios = [run_scenario(key, args, workdir) for key in args.scenarios]
    return {"run": meta, "scenarios": scenarios}


def _scenarios(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(SCENARIOS))
    if not keys or unknown:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}; got {text!r}")
    return keys


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("MNEMO_"):
        raise argparse.ArgumentTypeError(f"expected MNEMO_NAME=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=_scenarios, nargs="+", default=[list(SCENARIOS)],
                        help=f"of {', '.join(SCENARIOS)}, comma- or space-separated "
                             "(default: all)")
    parser.add_argument("--rate", type=float, default=RATE, help="labels per second")
    parser.add_argument("--rows", type=int, default=ROWS, help="rows per predict request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logs", default=None, help="keep the services' data and logs here")
    parser.add_argument("--markdown", default=None, help="write the tables here too")
    parser.add_argument("--json", default=None)
    parser.add_argument("--note", default="", help="a paragraph put under the method text")
    parser.add_argument("--set", type=_setting, action="append", default=[], metavar="MNEMO_X=V",
                        help="a setting besides the defaults (to compare; the table names it)")
    parser.add_argument("--benchmarks", type=Path, default=None,
                        help="splice the tables into this file (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    args.set = dict(args.set)
    args.scenarios = [key for keys in args.scenarios for key in keys]
    results = run(args)
    text = learning_table.markdown(results)
    for path, content in ((args.markdown, text), (args.json, json.dumps(results, indent=2))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content + "\n")
    if args.benchmarks:
        from service.bench.report import splice  # the mechanism `make bench` writes with

        splice(args.benchmarks, text.rstrip(), learning_table.START, learning_table.END,
               learning_table.HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
