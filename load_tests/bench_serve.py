"""`make bench-serve`: serving figures measured side by side in one run, on one machine.

Each server is one uvicorn process; the load is the open-loop generator (load_tests/open_loop.py)
on the same machine, so ratios measured in the same run are what matter, not absolute rates.

1. capacity (16 clients sending back to back: offering more than capacity open-loop would
   spend the shared CPU on the generator's queue): the floor (a bare FastAPI endpoint parsing
   the same JSON with pydantic, returning a constant; also without FastAPI's OpenTelemetry
   check, as Mnemo runs), Mnemo predict at 1 and at 16 rows per request;
2. feedback ingestion in batches of 100 (capacity as in 1; learner paused: the API
   process's own figure);
3. learner throughput end to end: the backlog from 2, from resume to caught up;
4. freshness: feedback at 1,000 items/s with the learner running; accepted → served p95 from
   the API's mnemo_update_freshness_seconds histogram, after a few seconds' warm-up;
5. latency at half of Mnemo's 1-row capacity, without and with a new current version every
   second (alternating between two published versions: each is loaded, warmed and swapped;
   activated in Redis as the learner publishes, from a process of its own,
   load_tests/publisher.py); quiet and publishing windows alternate, 4 of each, and each
   side's latencies are pooled (INTERLEAVED says why). As information, one window with the
   activations sent through the API's admin route instead.
   The learner is paused for both runs: an operator's activation also makes the learner
   reload that version's learner state, CPU a publish by the learner itself does not cost,
   and on 2 cores it would be charged to the API's latency. A few seconds at the same rate
   warm up first and are not counted (the first seconds of a rate ran 2-3x the steady p99).
6. records against vectors (issue 21): two more API processes of the same model, one taking a
   10-field record (RECORD_SCHEMA: 6 numeric, 3 categorical, 1 boolean; MNEMO_FEATURES), the
   other the equivalent vector (MNEMO_INPUT_DIM = the schema's encoded width, each body the
   encoding of the record body it stands for): capacity at 1 and 16 rows per request as in 1
   (the two alternating, best of the rounds; server CPU per request), then latency at one
   open-loop rate (half of the vector's median 1-row capacity) in alternating windows, pooled
   per side. Neither has a learner: both serve version 0, so the record server's vocabularies
   are empty and every categorical value takes the hashed-bucket path (a keyed hash per value,
   the encoder's costlier path).

`--phases 2,3` runs the learner's throughput alone (3 needs 2's backlog; 5 needs 1 and 4);
`--phases 6` the records-against-vectors comparison alone.

The learner (`python -m service learn`) runs throughout (idle while there is no feedback).
MLP 64→128→128→10, the default strategy. Redis: the machine's (a DB of its own, a unique model
name, its keys deleted afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from load_tests import bench_table, open_loop, publisher
from load_tests.bench_table import markdown
from load_tests.processes import cpu_seconds, free_port, started, wait_ready
from mnemo_client import Client
from models.features import FeatureSchema, RecordEncoder
from service.config import load_settings
from service.store.keys import Keys

DIM, CLASSES = 64, 10
LABELS = [f"c{i}" for i in range(CLASSES)]
ADMIN = "bench-admin"
WARM_UP_SECONDS = 4


def _mnemo_env(redis_url: str, model: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update({
        "MNEMO_REDIS_URL": redis_url, "MNEMO_MODEL_NAME": model, "MNEMO_PORT": str(port),
        "MNEMO_INPUT_DIM": str(DIM), "MNEMO_HIDDEN": "128,128", "MNEMO_LABELS": ",".join(LABELS),
        "MNEMO_ADMIN_TOKEN": ADMIN, "MNEMO_DEVICE": os.environ.get("MNEMO_DEVICE", "auto"),
        "MNEMO_LOG_LEVEL": "WARNING",
    })
    return env


def _bodies(url: str, make: Callable[[np.random.Generator], dict[str, Any]],
            count: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [open_loop.http_request(url, json.dumps(make(rng)).encode()) for _ in range(count)]


def _predict_body(rows: int) -> Callable[[np.random.Generator], dict[str, Any]]:
    return lambda rng: {"inputs": rng.normal(size=(rows, DIM)).round(4).tolist()}


# A learnable concept (the class is the argmax of a fixed projection), so candidates pass the
# gate and get served: random labels would be rejected and never reach freshness.
CONCEPT = np.random.default_rng(42).normal(size=(DIM, CLASSES))


def _feedback_body(rng: np.random.Generator) -> dict[str, Any]:
    x = rng.normal(size=(100, DIM)).round(4)
    y = np.argmax(x @ CONCEPT, axis=1)
    return {"items": [{"inputs": row, "label": LABELS[k]}
                      for row, k in zip(x.tolist(), y.tolist(), strict=True)]}


# Phase 6: a 10-field record (6 numeric, 3 categorical with modest vocabularies, 1 boolean); the
# categorical fields sized to their vocabularies, so that the equivalent vector stays narrow
# (89 numbers: the vector side is not slowed by a long body to parse).
RECORD_SCHEMA: dict[str, Any] = {
    "amount": "numeric", "age": "numeric", "balance": "numeric", "duration": "numeric",
    "score": "numeric", "items": "numeric",
    "country": {"kind": "categorical", "max_categories": 16, "buckets": 4},
    "channel": {"kind": "categorical", "max_categories": 8, "buckets": 4},
    "category": {"kind": "categorical", "max_categories": 32, "buckets": 8},
    "mobile": "boolean",
}
RECORD_VALUES = {"country": [f"C{i}" for i in range(12)], "channel": ["web", "app", "store",
                                                                      "phone", "partner"],
                 "category": [f"cat{i}" for i in range(30)]}
MISSING = 0.05  # each field of a record is absent with this probability


def _record_env(redis_url: str, port: int, *, records: bool) -> dict[str, str]:
    """A deployment of the benchmark's model for phase 6: records under RECORD_SCHEMA, or
    vectors of its encoded width."""
    env = _mnemo_env(redis_url, f"bench-{'rec' if records else 'vec'}-{uuid.uuid4().hex[:8]}",
                     port)
    features = json.dumps(RECORD_SCHEMA)
    if records:
        del env["MNEMO_INPUT_DIM"]
        env["MNEMO_FEATURES"] = features
    else:
        env["MNEMO_INPUT_DIM"] = str(load_settings({"MNEMO_FEATURES": features}).input_dim)
    return env


def _record_bodies(rows: int, count: int = 64) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(record bodies, the same bodies encoded as the record server encodes them): version 0's
    encoder, empty vocabularies, numbers rounded as the other phases' bodies are."""
    rng = np.random.default_rng(0)
    encoder = RecordEncoder(FeatureSchema.from_mapping(RECORD_SCHEMA))
    record_bodies, vector_bodies = [], []
    for _ in range(count):
        records = []
        for _ in range(rows):
            record: dict[str, Any] = {}
            for name, spec in RECORD_SCHEMA.items():
                if rng.random() < MISSING:
                    continue
                if name in RECORD_VALUES:
                    record[name] = str(rng.choice(RECORD_VALUES[name]))
                elif spec == "boolean":
                    record[name] = bool(rng.random() < 0.5)
                else:
                    record[name] = round(float(rng.normal(50, 20)), 4)
            records.append(record)
        record_bodies.append({"inputs": records})
        encoded = np.round(encoder.encode(records).astype(np.float64), 4)
        vector_bodies.append({"inputs": encoded.tolist()})
    return record_bodies, vector_bodies


def _load(url: str, bodies: list[bytes], rate: float, seconds: float) -> open_loop.Report:
    report = open_loop.drive(open_loop.run(url, rate, seconds, lambda i: bodies[i % len(bodies)]))
    print(f"  {url.rsplit('/', 2)[-1]:>9} @ {rate:>6.0f}/s: {report.line()}", flush=True)
    return report


def _capacity(url: str, bodies: list[bytes], seconds: float) -> open_loop.Report:
    report = open_loop.drive(open_loop.saturate(url, seconds, lambda i: bodies[i % len(bodies)]))
    print(f"  {url.rsplit('/', 2)[-1]:>9} saturated: {report.achieved_rate:.0f}/s "
          f"(ok {report.ok}, errors {report.errors})", flush=True)
    return report


def _metric(base: str, name: str) -> dict[str, float]:
    """Samples of one metric family from /metrics: {label text: value}."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        m = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def _two_served_versions(mnemo: Client) -> tuple[int, int]:
    """The current version and the newest other one that passed the gate and still has its
    weights (paging past the rejected ones): two weight sets to alternate between."""
    current = mnemo.version().version
    before: str | None = None
    while True:
        page = mnemo.versions(limit=100, before=before)
        for v in page.versions:
            if v.version != current and v.status != "rejected" and v.blobs:
                return current, v.version
        if not page.next:
            raise RuntimeError("no second servable version to swap to")
        before = page.next


def _freshness_p95(before: dict[str, float], after: dict[str, float]) -> tuple[float, int]:
    """(upper bucket bound holding the 95th percentile, swaps observed) between two reads."""
    buckets = []
    for labels, value in after.items():
        m = re.search(r'le="([^"]+)"', labels)
        if m:
            buckets.append((float(m.group(1)), value - before.get(labels, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    for bound, cumulative in buckets:
        if total and cumulative >= 0.95 * total:
            return bound, int(total)
    return float("nan"), int(total)


# Phases whose results a later one uses: 3 trains on 2's backlog; 5 takes half of 1's
# capacity and swaps between two versions 4 trained.
NEEDS = {3: {2}, 5: {1, 4}}
PHASES = 6


def parse_phases(text: str) -> set[int]:
    """'2,3' → {2, 3}; a phase without those it needs is refused."""
    phases = {int(p) for p in text.split(",") if p.strip()}
    if not phases or not phases <= set(range(1, PHASES + 1)):
        raise argparse.ArgumentTypeError(f"phases are numbers 1-{PHASES}, got {text!r}")
    for phase, needed in NEEDS.items():
        if phase in phases and not needed <= phases:
            raise argparse.ArgumentTypeError(f"phase {phase} needs phases {sorted(needed)}")
    return phases


def run(args: argparse.Namespace) -> dict[str, Any]:
    phases = args.phases
    model = f"bench-{uuid.uuid4().hex[:8]}"
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("floor", "floor_tuned", "mnemo", "records",
                                            "vectors")}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = _mnemo_env(args.redis_url, model, ports["mnemo"])
    results: dict[str, Any] = {"model": model}
    extra_models: list[str] = []
    with contextlib.ExitStack() as stack:
        pids: dict[str, int] = {}
        if 1 not in phases:  # the floor servers are phase 1's only
            del base["floor"], base["floor_tuned"]
        else:
            for name, extra in (("floor", []), ("floor_tuned", ["--tuned"])):
                pids[name] = stack.enter_context(started(
                    ["-m", "load_tests.floor_app", *extra, "--port", str(ports[name])], env,
                    logs / f"{name}.log")).pid
        if 6 not in phases:  # the record and vector servers are phase 6's only
            del base["records"], base["vectors"]
        else:
            for name in ("records", "vectors"):
                side_env = _record_env(args.redis_url, ports[name], records=name == "records")
                extra_models.append(side_env["MNEMO_MODEL_NAME"])
                pids[name] = stack.enter_context(started(["-m", "service", "serve"], side_env,
                                                         logs / f"serve_{name}.log")).pid
        pids["mnemo"] = stack.enter_context(started(["-m", "service", "serve"], env,
                                                     logs / "serve.log")).pid
        learner = stack.enter_context(started(["-m", "service", "learn"], env,
                                               logs / "learn.log"))
        for name in base:
            wait_ready(f"{base[name]}/openapi.json")
        # The control calls between phases (stats, versions, pause, resume, activate); the
        # load itself is raw HTTP from open_loop, whose cost is what is measured.
        mnemo = stack.enter_context(Client(base["mnemo"], admin_token=ADMIN, timeout=10))
        _wait_learner_started(mnemo)
        _phases(args, phases, base, results, learner.pid, pids, mnemo)

    client = redis.Redis.from_url(args.redis_url)
    for name in (model, *extra_models):
        for pattern in Keys(name).all_patterns():
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    client.close()
    return results


def _wait_learner_started(mnemo: Client, timeout: float = 120) -> None:
    """Until the learner has reported once: its start-up (imports, restoring state) takes
    seconds of CPU that would otherwise land in the first phase measured."""
    deadline = time.monotonic() + timeout
    while mnemo.stats().learning is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the learner did not report")
        time.sleep(0.5)


def _phases(args: argparse.Namespace, phases: set[int], base: dict[str, str],
            results: dict[str, Any], learner_pid: int, pids: dict[str, int],
            mnemo: Client) -> None:
    """The phases asked for, in order, with the servers up (module docstring)."""
    seconds = args.seconds
    fb_url = f"{base['mnemo']}/v1/feedback"
    # Distinct items (a body repeats a few times at most): a stream cycling a few dozen fixed
    # bodies made the learner's concept-drift detector fire tens of times per backlog.
    fb_bodies = _bodies(fb_url, _feedback_body, count=1000)
    if 1 in phases:
        print("1. capacity (16 clients back to back; best of "
              f"{args.rounds} alternating rounds)", flush=True)
        targets = {
            "floor": (f"{base['floor']}/v1/predict", 1),
            "floor_tuned": (f"{base['floor_tuned']}/v1/predict", 1),
            "mnemo_1": (f"{base['mnemo']}/v1/predict", 1),
            "mnemo_16": (f"{base['mnemo']}/v1/predict", 16),
        }
        bodies = {k: _bodies(url, _predict_body(rows)) for k, (url, rows) in targets.items()}
        capacity: dict[str, float] = {k: 0.0 for k in targets}
        rounds: dict[str, list[float]] = {k: [] for k in targets}
        cpu: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(args.rounds):
            for key, (url, _rows) in targets.items():
                pid = pids["mnemo" if key.startswith("mnemo") else key]
                used = cpu_seconds(pid)
                report = _capacity(url, bodies[key], seconds)
                after = cpu_seconds(pid)
                # Not Linux (no /proc): NaN, not a division by zero in the ratio below.
                spent = after - used if after is not None and used is not None else float("nan")
                cpu[key].append(spent / max(report.ok, 1) * 1e6)
                rounds[key].append(report.achieved_rate)
                capacity[key] = max(capacity[key], report.achieved_rate)
        results["capacity_rps"] = capacity
        results["capacity_rounds"] = rounds
        # The server's own CPU per request: the figure the shared cores disturb least.
        results["server_cpu_us"] = {k: float(np.median(v)) for k, v in cpu.items()}
        results["ratio_vs_floor"] = capacity["mnemo_1"] / capacity["floor"]
        results["ratio_vs_floor_tuned"] = capacity["mnemo_1"] / capacity["floor_tuned"]
        results["cpu_ratio_vs_floor"] = (results["server_cpu_us"]["floor"]
                                         / results["server_cpu_us"]["mnemo_1"])
        results["rows_ratio_16_vs_1"] = 16 * capacity["mnemo_16"] / capacity["mnemo_1"]

    if 2 in phases:
        print("2. feedback ingestion, batches of 100 (learner paused)", flush=True)
        mnemo.pause()
        ingest = _capacity(fb_url, fb_bodies, seconds)
        results["feedback_items_per_s"] = 100 * ingest.achieved_rate
        results["feedback_errors"] = ingest.errors

    if 3 in phases:
        print("3. learner throughput on that backlog", flush=True)
        start_seen = mnemo.stats().samples_seen
        backlog = mnemo.stats().feedback_lag
        resumed_at, cpu_before = time.monotonic(), cpu_seconds(learner_pid)
        mnemo.resume()
        stats = mnemo.stats()
        while stats.feedback_lag and time.monotonic() - resumed_at < args.learner_timeout:
            time.sleep(0.5)
            stats = mnemo.stats()
        elapsed, cpu_after = time.monotonic() - resumed_at, cpu_seconds(learner_pid)
        processed = stats.samples_seen - start_seen
        # On a shared machine the learner gets what the others leave: items per CPU-second of
        # the learner process is the figure that compares across runs.
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        results["learner"] = {"backlog": backlog, "processed": processed,
                              "seconds": round(elapsed, 1),
                              "items_per_s": processed / elapsed,
                              "caught_up": not stats.feedback_lag,
                              "cpu_seconds": cpu,
                              "items_per_cpu_s": processed / cpu if cpu else None,
                              # each one retrains a copy and re-consolidates: CPU to know about
                              "drift_events": (stats.raw.get("drift") or {}).get(
                                  "concept_drift_events")}
        print(f"  {processed} of {backlog} items in {elapsed:.1f} s: "
              f"{processed / elapsed:.0f} items/s; learner CPU {cpu or float('nan'):.1f} s: "
              f"{results['learner']['items_per_cpu_s'] or float('nan'):.0f} items per CPU-second "
              f"({results['learner']['drift_events']} concept drift events)", flush=True)

    if 4 in phases:
        print("4. freshness at 1,000 items/s (learner running)", flush=True)
        name = "mnemo_update_freshness_seconds_bucket"
        # A warm-up at the rate, not counted: the learner's first publish here still carries
        # the end of phase 2's backlog, accepted a minute ago (one run counted it: p95 <= 5 s
        # where the others gave <= 0.5 s).
        _load(fb_url, fb_bodies, 10, WARM_UP_SECONDS)
        before = _metric(base["mnemo"], name)
        fresh = _load(fb_url, fb_bodies, 10, args.freshness_seconds)
        time.sleep(6)
        p95, observed = _freshness_p95(before, _metric(base["mnemo"], name))
        results["freshness"] = {"p95_bound_s": p95, "swaps": observed,
                                "feedback_errors": fresh.errors}
        print(f"  p95 <= {p95} s over {observed} swaps", flush=True)

    if 5 in phases:
        # Two trained versions for phase 5, chosen while they are among the newest (retention
        # deletes older unactivated blobs) and kept by activating each once. After the
        # freshness phase: an operator's activation makes the learner's next publish carry
        # items counted from the activated version, which is not the steady state measured.
        pair = _two_served_versions(mnemo)
        for version in (pair[1], pair[0]):
            mnemo.activate(version)
        # Half of the median round's capacity (the best round is a quiet moment of a shared
        # machine); the swap comparison also at a quarter, where the shared cores' noise is
        # smaller than the effect measured.
        half = float(np.median(rounds["mnemo_1"])) / 2
        print(f"5. latency at half capacity ({half:.0f}/s), without and with a new version "
              "every second (learner paused)", flush=True)
        mnemo.pause()
        url = targets["mnemo_1"][0]
        # Steady state, not the moments after the activations above (the learner reloads the
        # activated version's state, the API loads it) or a cold start of this rate: a warm-up
        # at the same rate, not counted.
        time.sleep(2)
        print("  warm-up:", flush=True)
        _load(url, bodies["mnemo_1"], half, WARM_UP_SECONDS)
        # Published in Redis, as the learner publishes (every replica follows); then, as
        # information, through this process's admin route (an operator's rollback), which
        # also makes it answer a request on FastAPI's full path.
        published = ["--redis-url", args.redis_url, "--model", results["model"]]
        admin_route = ["--url", base["mnemo"], "--token", ADMIN]
        swaps_before = sum(_metric(base["mnemo"], "mnemo_model_swaps_total").values())
        quiet, swapping = _interleaved(url, bodies["mnemo_1"], half, seconds, published, pair)
        swaps = sum(_metric(base["mnemo"], "mnemo_model_swaps_total").values()) - swaps_before
        with publisher.running(admin_route, pair):
            through_admin = _load(url, bodies["mnemo_1"], half, seconds)
        results["half_load"] = {"quiet": quiet.summary(), "swapping": swapping.summary(),
                                "swaps": swaps, "admin_route": through_admin.summary()}
        quarter_quiet, quarter_swapping = _interleaved(url, bodies["mnemo_1"], half / 2,
                                                       seconds, published, pair)
        results["quarter_load"] = {"quiet": quarter_quiet.summary(),
                                   "swapping": quarter_swapping.summary()}

    if 6 in phases:
        results["records"] = _records_against_vectors(args, base, pids)


def _records_against_vectors(args: argparse.Namespace, base: dict[str, str],
                             pids: dict[str, int]) -> dict[str, Any]:
    """Phase 6 (module docstring): the same model on a 10-field record and on its vector."""
    seconds = args.seconds
    print("6. a 10-field record against the equivalent vector (capacity: 16 clients back to "
          f"back, best of {args.rounds} alternating rounds)", flush=True)
    sides = ("records", "vectors")
    bodies: dict[tuple[str, int], list[bytes]] = {}
    for rows in (1, 16):
        record_bodies, vector_bodies = _record_bodies(rows)
        for side, made in zip(sides, (record_bodies, vector_bodies), strict=True):
            url = f"{base[side]}/v1/predict"
            bodies[side, rows] = [open_loop.http_request(url, json.dumps(b).encode())
                                  for b in made]
    out: dict[str, Any] = {
        "fields": len(RECORD_SCHEMA),
        "width": load_settings({"MNEMO_FEATURES": json.dumps(RECORD_SCHEMA)}).input_dim,
        "body_bytes": {f"{side}_{rows}": float(np.mean([len(b) for b in bodies[side, rows]]))
                       for side in sides for rows in (1, 16)},
    }
    rounds: dict[str, list[float]] = {f"{side}_{rows}": [] for rows in (1, 16) for side in sides}
    cpu: dict[str, list[float]] = {key: [] for key in rounds}
    for _ in range(args.rounds):
        for rows in (1, 16):
            for side in sides:
                key = f"{side}_{rows}"
                used = cpu_seconds(pids[side])
                report = _capacity(f"{base[side]}/v1/predict", bodies[side, rows], seconds)
                after = cpu_seconds(pids[side])
                spent = after - used if after is not None and used is not None else float("nan")
                cpu[key].append(spent / max(report.ok, 1) * 1e6)
                rounds[key].append(report.achieved_rate)
                if report.errors:
                    print(f"  {key}: {report.errors} errors", flush=True)
    out["capacity_rps"] = {key: max(v) for key, v in rounds.items()}
    out["capacity_rounds"] = rounds
    out["server_cpu_us"] = {key: float(np.median(v)) for key, v in cpu.items()}
    rate = float(np.median(rounds["vectors_1"])) / 2
    print(f"  latency at {rate:.0f}/s (half the vector's median 1-row capacity), alternating "
          "windows; warm-up:", flush=True)
    for side in sides:
        _load(f"{base[side]}/v1/predict", bodies[side, 1], rate, WARM_UP_SECONDS)
    windows: dict[str, list[open_loop.Report]] = {side: [] for side in sides}
    for i in range(INTERLEAVED):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            windows[side].append(_load(f"{base[side]}/v1/predict", bodies[side, 1], rate,
                                       2 * seconds / INTERLEAVED))
    out["latency"] = {side: open_loop.Report.merged(w).summary() for side, w in windows.items()}
    return out


# Quiet and publishing windows alternate, each measure pooled over its windows: the shared
# machine's own slow moments (p99 of one 16 s window at one rate ranged 3.5-7.4 ms on this
# machine within minutes) then fall on both sides instead of deciding the ratio.
INTERLEAVED = 4


def _interleaved(url: str, bodies: list[bytes], rate: float, seconds: float,
                 route: list[str], versions: tuple[int, int],
                 ) -> tuple[open_loop.Report, open_loop.Report]:
    """(quiet, publishing): INTERLEAVED windows of each, 2 × `seconds` in all per side."""
    quiet: list[open_loop.Report] = []
    publishing: list[open_loop.Report] = []
    window = 2 * seconds / INTERLEAVED
    for _ in range(INTERLEAVED):
        quiet.append(_load(url, bodies, rate, window))
        with publisher.running(route, versions):
            publishing.append(_load(url, bodies, rate, window))
    return open_loop.Report.merged(quiet), open_loop.Report.merged(publishing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--learner-timeout", type=float, default=120)
    parser.add_argument("--freshness-seconds", type=float, default=20)
    parser.add_argument("--logs", default="bench_results/serve_logs")
    parser.add_argument("--phases", type=parse_phases, default=parse_phases("1,2,3,4,5,6"),
                        help="comma-separated phases to run (module docstring), e.g. 2,3 for "
                        "the learner's throughput alone, 6 for records against vectors; 3 "
                        "needs 2, 5 needs 1 and 4")
    parser.add_argument("--markdown", default=None, help="write the table here too")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = run(args)
    table = markdown(results)
    print(table)
    bench_table.save(table, results, args.markdown, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
