"""`python -m service report`: the live page's charts as one PNG, drawn from the learner's
history stream (docs/DESIGN.md §5), for offline use and for attaching to tickets. matplotlib is an
optional extra (`pip install 'mnemo[report]'`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError

from service.config import Settings
from service.store.connection import open_redis
from service.store.history import MAX_ENTRIES, MAX_READ, read_history
from service.store.keys import Keys

Entry = dict[str, Any]
Series = dict[str, dict[str, dict[str, list[float]]]]  # chart -> line -> {"time", "value"}
TITLES = {"accuracy": "accuracy", "tag_accuracy": "accuracy per tag",
          "tag_forgetting": "forgetting per tag", "drift": "drift statistics",
          "feedback_lag": "feedback lag (items)", "loss": "training loss",
          "model_version": "served version"}
DRIFT = ("psi_max", "prediction_js", "label_js")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--data", type=Path, help="also write the plotted series as JSON here")
    parser.add_argument("--model", help="deployment name (default: MNEMO_MODEL_NAME)")
    parser.add_argument("--url", help="read the history from a running API (e.g. "
                        "http://127.0.0.1:8000, token from MNEMO_API_TOKEN; newest "
                        f"{MAX_READ} entries) instead of MNEMO_REDIS_URL")


def chart_series(entries: list[Entry]) -> Series:
    """Every chart's lines: (time, value) of each entry where the value is a number."""
    def line(pick: Callable[[Entry], Any]) -> dict[str, list[float]]:
        points = [(e["time"], pick(e)) for e in entries]
        kept = [(t, v) for t, v in points if _is_number(v)]
        return {"time": [t for t, _ in kept], "value": [v for _, v in kept]}

    tags = sorted({tag for e in entries for tag in e.get("tags") or {}})

    def per_tag(field: str) -> dict[str, dict[str, list[float]]]:
        return {t: line(lambda e, t=t: ((e.get("tags") or {}).get(t) or {}).get(field))
                for t in tags}

    return {
        "accuracy": {"prequential": line(lambda e: e.get("prequential_accuracy")),
                     "balanced": line(lambda e: e.get("balanced_accuracy"))},
        "tag_accuracy": per_tag("accuracy"),
        "tag_forgetting": per_tag("forgetting"),
        "drift": {name: line(lambda e, n=name: (e.get("drift") or {}).get(n)) for name in DRIFT},
        "feedback_lag": {"feedback_lag": line(lambda e: e.get("feedback_lag"))},
        "loss": {"loss": line(lambda e: e.get("loss"))},
        "model_version": {"model_version": line(lambda e: e.get("model_version"))},
    }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def draw(series: Series, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(14, 14), constrained_layout=True)
    fig.suptitle(title)
    for ax, (chart, lines) in zip(axes.flat, series.items(), strict=False):
        ax.set_title(TITLES[chart])
        for name, points in lines.items():
            times = [datetime.fromtimestamp(t / 1000, UTC) for t in points["time"]]
            ax.plot(times, points["value"], label=name, marker="." if len(times) < 50 else None,
                    drawstyle="steps-post" if chart == "model_version" else "default")
        if not any(points["value"] for points in lines.values()):
            ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.legend(loc="best", fontsize="small")
        locator = mdates.AutoDateLocator(tz=UTC)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(series):]:
        ax.remove()
    fig.savefig(out, dpi=100)
    plt.close(fig)


async def _from_redis(settings: Settings, model: str) -> list[Entry]:
    redis = open_redis(settings)
    try:
        return await read_history(redis, Keys(model), MAX_ENTRIES)
    finally:
        await redis.aclose()


def _from_api(url: str, token: str | None) -> list[Entry]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url.rstrip('/')}/v1/stats/history", params={"limit": MAX_READ},
                         headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()["entries"]


def main(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import matplotlib  # noqa: F401  (checked first: nothing is read without it)
    except ImportError:
        print("mnemo report: needs matplotlib, an optional extra: pip install 'mnemo[report]'",
              file=sys.stderr)
        return 2
    model = args.model or settings.model_name
    if not (args.url or settings.external_redis):
        print("mnemo report: give --url of a running API, or MNEMO_REDIS_URL", file=sys.stderr)
        return 2
    try:
        entries = (_from_api(args.url, settings.api_token) if args.url
                   else asyncio.run(_from_redis(settings, model)))
    except (RedisError, httpx.HTTPError) as exc:
        print(f"mnemo report: cannot read the history: {exc}", file=sys.stderr)
        return 1
    if not entries:
        print(f"mnemo report: no history for model {model!r} yet (has a learner run?)",
              file=sys.stderr)
        return 1
    series = chart_series(entries)
    last = entries[-1]
    draw(series, f"Mnemo {model}: version {last['model_version']}, "
                 f"{last['samples_seen']} samples seen ({len(entries)} history entries)", args.out)
    if args.data:
        args.data.write_text(json.dumps({"model": model, "entries": len(entries),
                                         "series": series}, indent=1))
    print(f"wrote {args.out} ({len(entries)} history entries)")
    return 0
