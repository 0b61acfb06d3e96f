"""`python -m service report`: the PNG is written from the learner's history stream, and the
series it drew (its --data sidecar) equal that stream entry by entry; without matplotlib it
exits 2 naming the extra."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis

from service.config import Settings
from service.store.keys import Keys
from tests.conftest import REDIS_URL
from tests.e2e.procs import ROOT, base_env
from tests.worker.test_learner_metrics import append, begin, domain, drain, metered
from tests.worker.test_loop import init_deployment

PNG = b"\x89PNG\r\n\x1a\n"
# chart -> line -> how to read its value from a raw history entry
LINES: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "accuracy": {"prequential": lambda e: e["prequential_accuracy"],
                 "balanced": lambda e: e["balanced_accuracy"]},
    "drift": {n: lambda e, n=n: e["drift"][n] for n in ("psi_max", "prediction_js", "label_js")},
    "feedback_lag": {"feedback_lag": lambda e: e["feedback_lag"]},
    "loss": {"loss": lambda e: e["loss"]},
    "model_version": {"model_version": lambda e: e["model_version"]},
}


def report(*args: str | Path, env: dict[str, str], code: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    command = ([sys.executable, "-c", code] if code
               else [sys.executable, "-m", "service", "report"]) + [str(a) for a in args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=180, check=False)


def raw_history(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [{"time": int(sid.split(b"-")[0]),
             **{k.decode(): json.loads(v) for k, v in fields.items()}}
            for sid, fields in client.xrange(keys.stats_history)]


def expected_line(entries: list[dict[str, Any]], pick: Callable[[dict[str, Any]], Any]
                  ) -> dict[str, list[Any]]:
    kept = [(e["time"], pick(e)) for e in entries if pick(e) is not None]
    return {"time": [t for t, _ in kept], "value": [v for _, v in kept]}


async def test_report_draws_the_history_stream(
    settings_for: Callable[..., Settings], aredis: Redis, redis_client: redis.Redis,
    model_name: str, tmp_path: Path,
) -> None:
    settings = settings_for(publish_every_samples=150, holdout_fraction=0.3)
    await init_deployment(settings, aredis)
    learner, _ = metered(settings, aredis)
    await begin(learner)
    for seed, (sign, tag) in enumerate([(1.0, "alpha"), (-1.0, "beta"), (1.0, "alpha")]):
        x, y = domain(300, seed, sign)
        await append(aredis, settings, x, y, [tag] * len(y))
        await drain(learner)
    assert learner.reporter.last_history is not None
    learner.reporter.last_history -= 3600  # and a minute's tick
    await learner.report()

    entries = raw_history(redis_client, Keys(model_name))
    assert len(entries) >= 5 and entries[-1]["event"] == "tick"
    env = base_env(redis_url=REDIS_URL)
    out, data = tmp_path / "report.png", tmp_path / "report.json"
    done = report("--out", out, "--data", data, "--model", model_name, env=env)
    assert done.returncode == 0, done.stderr
    png = out.read_bytes()
    assert png[:8] == PNG and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1400, 1400)
    assert len(png) > 30_000, len(png)  # eight panels of lines, not an empty canvas

    drawn = json.loads(data.read_text())
    assert (drawn["model"], drawn["entries"]) == (model_name, len(entries))
    series = drawn["series"]
    for chart, lines in LINES.items():
        assert series[chart] == {name: expected_line(entries, pick) for name, pick in lines.items()}
    tags = {"alpha", "beta"}
    for field in ("accuracy", "forgetting"):
        assert series[f"tag_{field}"] == {t: expected_line(
            entries, lambda e, t=t, f=field: ((e["tags"] or {}).get(t) or {}).get(f)) for t in tags}
    # Not vacuous: every publish is a point, the learner learned.
    assert series["model_version"]["model_version"]["value"][-1] == learner.served_version >= 2
    assert series["tag_accuracy"]["alpha"]["value"][-1] > 0.8


def test_report_without_matplotlib_or_history(tmp_path: Path, model_name: str) -> None:
    env = base_env(redis_url=REDIS_URL, model_name=model_name)
    out = tmp_path / "report.png"
    blocked = "import sys; sys.modules['matplotlib'] = None; from service.cli import main; " \
              "sys.exit(main(sys.argv[1:]))"
    done = report("report", "--out", out, env=env, code=blocked)
    assert done.returncode == 2 and "pip install 'mnemo[report]'" in done.stderr, done.stderr
    empty = report("--out", out, env=env)
    assert empty.returncode == 1 and f"no history for model {model_name!r}" in empty.stderr
    nowhere = report("--out", out, env=base_env())
    assert nowhere.returncode == 2 and "--url" in nowhere.stderr and "MNEMO_REDIS_URL" in nowhere.stderr
    assert not out.exists()
