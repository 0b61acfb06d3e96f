"""The live page (GET /dashboard) in headless Chromium against a real `python -m service run`
that has learned something: the values it plots equal /v1/stats and the history stream, it
refreshes itself, and a screenshot is taken — with and without MNEMO_API_TOKEN (with one, the
page first shows the token prompt and no data)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service.report import chart_series
from tests.conftest import free_port
from tests.e2e.browser import Browser
from tests.e2e.procs import Procs, base_env, wait_for
from tests.e2e.traffic import DIM, Stream

MODEL = "page-test"
TOKEN = "page-secret-token"
PAGE_STATE = "JSON.parse(JSON.stringify(window.__mnemo))"
DRAWN = """[...document.querySelectorAll('svg[data-chart] polyline')].map(p => ({
  chart: p.closest('svg').dataset.chart, name: p.dataset.name,
  values: JSON.parse(p.dataset.values), points: p.getAttribute('points').trim().split(/\\s+/).length}))"""
CELLS = "Object.fromEntries([...document.querySelectorAll('[data-field]')]" \
        ".map(c => [c.dataset.field, JSON.parse(c.dataset.value)]))"


def numbers(rows: list[dict[str, Any]], pick: Any) -> list[float]:
    values = [pick(row) for row in rows]
    return [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)]


def expected_charts(history: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
    """What each chart must plot: a value per history entry, then the /v1/stats value."""
    rows = [*history, stats]
    tags = sorted({tag for row in rows for tag in row.get("tags") or {}})

    def per_tag(field: str) -> dict[str, list[float]]:
        return {t: numbers(rows, lambda r, t=t: ((r.get("tags") or {}).get(t) or {}).get(field))
                for t in tags}

    return {
        "accuracy": {"prequential": numbers(rows, lambda r: r["prequential_accuracy"]),
                     "balanced": numbers(rows, lambda r: r["balanced_accuracy"])},
        "tag_accuracy": per_tag("accuracy"),
        "tag_forgetting": per_tag("forgetting"),
        "drift": {name: numbers(rows, lambda r, n=name: r["drift"][n])
                  for name in ("psi_max", "prediction_js", "label_js")},
        "feedback_lag": {"feedback_lag": numbers(rows, lambda r: r["feedback_lag"])},
        "loss": {"loss": numbers(history, lambda r: r["loss"])},
    }


def lineage(versions: dict[str, Any]) -> list[int]:
    by_number = {v["version"]: v for v in versions["versions"]}
    chain, version = [], by_number.get(versions["current"])
    while version is not None:
        chain.append(version["version"])
        version = by_number.get(version["parent"])
    return chain


def assert_page_shows_the_api(page: Browser, api: httpx.Client) -> None:
    """The page's data is the API's, and every chart plots exactly the expected values."""
    def same_as_api() -> dict[str, Any] | None:
        state = page.evaluate(PAGE_STATE)
        stats = api.get("/v1/stats").json()
        history = api.get("/v1/stats/history", params={"limit": 500}).json()["entries"]
        ok = state["state"] == "ok" and state["stats"] == stats and state["history"] == history
        return state if ok else None

    state = wait_for(same_as_api, 60, "the page to show what /v1/stats says", interval=0.5)
    stats, history = state["stats"], state["history"]
    assert [e["event"] for e in history].count("publish") >= 2
    assert page.evaluate(CELLS) == {f: stats[f] for f in (
        "model_version", "samples_seen", "feedback_lag", "prequential_accuracy",
        "balanced_accuracy", "learning")}
    expected = expected_charts(history, stats)
    drawn: dict[str, dict[str, list[float]]] = {}
    for line in page.evaluate(DRAWN):
        assert line["points"] == len(line["values"]), line  # every value is a drawn point
        drawn.setdefault(line["chart"], {})[line["name"]] = line["values"]
    assert drawn == expected == state["charts"]
    # Not vacuous: the learner has learned, and the last point of each series is /v1/stats.
    assert set(drawn["tag_accuracy"]) == {"t1", "t2"}
    assert drawn["accuracy"]["prequential"][-1] == stats["prequential_accuracy"] > 0.7
    assert drawn["drift"]["psi_max"][-1] == stats["drift"]["psi_max"] is not None
    assert drawn["feedback_lag"]["feedback_lag"][-1] == stats["feedback_lag"] == 0
    assert len(drawn["loss"]["loss"]) >= 2
    versions = api.get("/v1/versions", params={"limit": 50}).json()
    assert state["lineage"] == lineage(versions) and state["lineage"][0] == stats["model_version"] > 0
    assert page.evaluate("document.getElementById('login').hidden") is True


def assert_screenshot(page: Browser, path: Path) -> None:
    png = page.screenshot(path)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert image.size == (1280, 1400)
    colors = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50, f"{path}: {len(colors)} colours: an empty page?"


@pytest.mark.parametrize("token", [None, TOKEN], ids=["open", "token"])
def test_live_page_plots_what_the_api_says(tmp_path: Path, procs: Procs, token: str | None) -> None:
    port = free_port()
    settings = {"api_token": token} if token else {}
    env = base_env(data_dir=tmp_path / "data", port=port, learner_metrics_port=0,
                   model_name=MODEL, input_dim=DIM, labels="a,b", publish_every_seconds=1,
                   holdout_fraction=0.5, log_level="WARNING", **settings)
    service = procs.start("run", ["run"], env)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as api:
        wait_for(lambda: service.popen.poll() is None and api.get("/readyz").status_code == 200,
                 90, "the API ready", procs.logs, 0.2)
        stream = Stream(api)
        stream.send(200)  # 1,600 labels and sampled inputs: the drift windows fill
        sent = stream.sent

        def learned() -> bool:
            stats = api.get("/v1/stats").json()
            newest = api.get("/v1/stats/history", params={"limit": 5}).json()["entries"]
            return (stats["samples_seen"] >= sent and stats["tags"] is not None
                    and any(e["event"] == "publish" and e["samples_seen"] == sent for e in newest))

        wait_for(learned, 90, "the learner to learn and publish everything", procs.logs, 0.3)
        shell = httpx.get(f"{url}/dashboard")  # open, and without any secret in it
        assert shell.status_code == 200 and "<svg" in shell.text
        assert token is None or token not in shell.text

        with Browser(tmp_path) as page:
            page.open(f"{url}/dashboard")
            if token:
                wait_for(lambda: page.evaluate("window.__mnemo.state") == "login", 30,
                         "the token prompt")
                assert page.evaluate(PAGE_STATE)["stats"] is None
                assert page.evaluate("document.getElementById('data').hidden") is True
                assert page.evaluate("document.querySelectorAll('polyline').length") == 0
                assert_screenshot(page, tmp_path / "login.png")  # the prompt alone is a page too
                for given in ("wrong-token", token):
                    page.evaluate(f"document.getElementById('token').value = {json.dumps(given)};"
                                  "document.getElementById('login').requestSubmit()")
                    if given != token:
                        wait_for(lambda: page.evaluate(
                            "!document.getElementById('login-error').hidden"), 30,
                            "the refused-token message")
                        assert page.evaluate("window.__mnemo.state") == "login"
            assert_page_shows_the_api(page, api)
            assert_screenshot(page, tmp_path / "dashboard.png")

            # It refreshes itself: new labels show up without a reload.
            before = page.evaluate("window.__mnemo.stats.samples_seen")
            rows = [[0.5] + [0.1] * (DIM - 1), [-0.5] + [0.1] * (DIM - 1)]
            fed = api.post("/v1/feedback", json={"items": [
                {"inputs": row, "label": "a" if row[0] > 0 else "b", "tag": "t1"} for row in rows]})
            assert fed.status_code == 202, fed.text
            wait_for(lambda: page.evaluate("window.__mnemo.stats.samples_seen") == before + 2,
                     60, "the page to refresh itself", procs.logs, 0.3)

            # One model's page by name (a deployment may serve several): the same data through
            # its /v1/models/<name>/ routes; a name the deployment does not serve is an error.
            if token is None:
                page.open(f"{url}/dashboard?model={MODEL}")
                assert_page_shows_the_api(page, api)
                assert page.evaluate("window.__mnemo.api") == f"/v1/models/{MODEL}/"
                wait_for(lambda: page.evaluate("window.__mnemo.models") == [MODEL], 30,
                         "the page to list the models")
                assert page.evaluate("document.getElementById('model').textContent") == MODEL
                assert page.evaluate("document.getElementById('models').hidden") is True
                page.open(f"{url}/dashboard?model=nope")
                wait_for(lambda: page.evaluate("window.__mnemo.state") == "error", 30,
                         "an unknown model to be an error")

        # The PNG report reads the same history from the running API (token from the env).
        out, data = tmp_path / "report.png", tmp_path / "report.json"
        done = subprocess.run([sys.executable, "-m", "service", "report", "--url", url, "--out",
                               str(out), "--data", str(data)], env=base_env(**settings),
                              capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        history = api.get("/v1/stats/history", params={"limit": 2000}).json()["entries"]
        assert json.loads(data.read_text())["series"] == chart_series(history)
