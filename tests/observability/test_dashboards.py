"""The Grafana dashboards in deploy/ against a real Prometheus: `python -m service run` serves
some predict and feedback traffic, a `prometheus` binary scrapes it through a copy of
deploy/prometheus.yml pointed at the test's ports, and every panel query of every dashboard
must answer with data. Also: the dashboards parse, carry the `model` variable, use the
provisioned datasource and only DESIGN §7 metric names.

`prometheus` (the Debian package) is installed by .ci/run; without it this test fails."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.procs import Procs, base_env, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
MODEL = "obs-test"
TAGS = ("t1", "t2")
RATE_INTERVAL, INTERVAL = "1m", "5s"  # what Grafana would pick at a 1 s scrape, with margin

# DESIGN §7, fixed names; histograms expand to their series below.
COUNTERS = {"mnemo_predict_requests_total", "mnemo_feedback_items_total",
            "mnemo_model_swaps_total", "mnemo_model_load_failures_total",
            "mnemo_learner_samples_total", "mnemo_learner_steps_total",
            "mnemo_model_publish_total", "mnemo_concept_drift_events_total"}
GAUGES = {"mnemo_model_version", "mnemo_learner_loss", "mnemo_learner_penalty",
          "mnemo_feedback_lag_items", "mnemo_reservoir_size", "mnemo_prequential_accuracy",
          "mnemo_balanced_accuracy", "mnemo_accuracy", "mnemo_forgetting", "mnemo_drift_psi",
          "mnemo_drift_psi_max", "mnemo_drift_prediction_js", "mnemo_drift_label_js"}
HISTOGRAMS = {"mnemo_predict_latency_seconds", "mnemo_predict_batch_size",
              "mnemo_update_freshness_seconds"}
SECTION_7 = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
# Being added to the learner: a query over one of these may come back empty only while the
# learner does not export it yet.
DRIFT_GAUGES = ("mnemo_drift_psi", "mnemo_drift_psi_max", "mnemo_drift_prediction_js",
                "mnemo_drift_label_js")


@dataclass(frozen=True)
class Query:
    where: str  # "<dashboard uid> / <panel title> / <refId>"
    expr: str


def load_dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert len(files) == 3, files
    return {f.name: json.loads(f.read_text()) for f in files}


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append(Query(f"{dashboard['uid']} / {panel['title']} / {target['refId']}",
                             target["expr"]))
    return out


def annotation_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [Query(f"{dashboard['uid']} / annotation {a['name']}", a["expr"])
            for a in dashboard["annotations"]["list"] if "expr" in a]


def substitute(expr: str) -> str:
    return (expr.replace("$model", MODEL).replace("$__rate_interval", RATE_INTERVAL)
            .replace("$__interval", INTERVAL))


def metric_names(expr: str) -> set[str]:
    """Metric names of the selectors: every `name{` and every mnemo_* identifier."""
    names = set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{", expr))
    return names | set(re.findall(r"\bmnemo_[a-z0-9_]+", expr))


# ---- static checks ---------------------------------------------------------------------------

def test_dashboards_parse_and_use_the_provisioned_datasource_and_model_variable() -> None:
    uid = re.search(r"^\s*uid:\s*(\S+)\s*$", DATASOURCES.read_text(), re.MULTILINE)
    assert uid, "deploy/grafana provisioning datasource has no uid"
    datasource = uid.group(1)
    dashboards = load_dashboards()
    assert len({d["uid"] for d in dashboards.values()}) == 3
    titles = {d["title"] for d in dashboards.values()}
    assert titles == {"Mnemo / Service", "Mnemo / Learning", "Mnemo / Drift"}, titles
    for name, d in dashboards.items():
        assert d["schemaVersion"] >= 36, name  # Grafana 10+
        variables = {v["name"]: v for v in d["templating"]["list"]}
        model = variables.get("model")
        assert model and model["type"] == "query", f"{name}: no `model` query variable"
        assert model["query"]["query"] == "label_values(mnemo_model_version, model)", name
        assert model["datasource"]["uid"] == datasource, name
        queries = panel_queries(d)
        assert queries, name
        for panel in d["panels"]:
            assert panel["datasource"]["uid"] == datasource, (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource, (name, panel["title"])
        for q in queries + annotation_queries(d):
            assert 'model="$model"' in q.expr, f"{q.where}: not filtered by $model: {q.expr}"
            unknown = metric_names(q.expr) - SECTION_7
            assert not unknown, f"{q.where}: not a DESIGN §7 metric: {unknown}"
    used = {n for d in dashboards.values() for q in panel_queries(d) for n in metric_names(q.expr)}
    expected = COUNTERS | GAUGES | {f"{h}_bucket" for h in HISTOGRAMS}
    assert not expected - used, f"§7 metrics on no dashboard panel: {sorted(expected - used)}"
    drift = next(d for d in dashboards.values() if d["title"] == "Mnemo / Drift")
    annotation = annotation_queries(drift)
    assert len(annotation) == 1
    assert re.fullmatch(r"changes\(mnemo_concept_drift_events_total\{[^}]*\}\[\w+\]\) > 0",
                        annotation[0].expr), annotation[0].expr


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install the Debian package `prometheus` (.ci/run does)"
    check = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


# ---- against a real Prometheus ---------------------------------------------------------------

def prometheus_config(api_port: int, learner_port: int) -> str:
    text = (DEPLOY / "prometheus.yml").read_text()
    for old, new in (('"api:8000"', f'"127.0.0.1:{api_port}"'),
                     ('"learner:9101"', f'"127.0.0.1:{learner_port}"'),
                     ("scrape_interval: 5s", "scrape_interval: 1s"),
                     ("evaluation_interval: 5s", "evaluation_interval: 1s"),
                     ("scrape_timeout: 4s", "scrape_timeout: 1s")):
        assert text.count(old) == 1, f"deploy/prometheus.yml: expected one {old!r} to rewrite"
        text = text.replace(old, new)
    return text


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """`python -m service` processes, stopped (process groups) at teardown, also on failure."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    assert binary, ("the `prometheus` binary is not installed: `apt-get install prometheus` "
                    "(.ci/run installs it before `make test`)")
    return binary


def start_prometheus(config: Path, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    with (tmp_path / "prometheus.log").open("wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [prometheus_binary(), f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole at the end
        )


def stop_group(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        popen.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()


def drive_traffic(api: httpx.Client) -> int:
    """Tagged predictions, then feedback by prediction id (a learnable rule: label a iff
    x0 > 0), plus a few refused requests (client_error). Enough of it (> 1,500 labels and
    sampled inputs) to fill the drift monitor's reference and current windows."""
    rng = random.Random(7)
    sent = 0
    for round_ in range(16):
        tag = TAGS[round_ % 2]
        rows = [[rng.uniform(-1, 1) for _ in range(4)] for _ in range(100)]
        answer = api.post("/v1/predict", json={"inputs": rows, "tag": tag})
        assert answer.status_code == 200, answer.text
        items = [{"prediction_id": p["id"], "label": "a" if row[0] > 0 else "b"}
                 for p, row in zip(answer.json()["predictions"], rows, strict=True)]
        fed = api.post("/v1/feedback", json={"items": items})
        assert fed.status_code == 202, fed.text
        sent += len(items)
        for i in range(12):  # small requests: latency samples, small batches, drift samples
            small = api.post("/v1/predict", json={"inputs": rows[i * 8:(i + 1) * 8], "tag": tag})
            assert small.status_code == 200, small.text
        time.sleep(0.1)  # spread over a few scrapes; the learner publishes between rounds
    for _ in range(3):
        assert api.post("/v1/predict", json={"inputs": [[1.0, 2.0]]}).status_code == 422
    return sent


def test_every_dashboard_query_returns_data(tmp_path: Path, procs: Procs) -> None:
    prometheus_binary()  # before starting anything
    config, prom_port = tmp_path / "prometheus.yml", free_port()
    api_port, learner_port = free_port(), free_port()
    env = base_env(data_dir=tmp_path / "data", port=api_port, learner_metrics_port=learner_port,
                   model_name=MODEL, input_dim=4, labels="a,b", publish_every_seconds=1,
                   holdout_fraction=0.5, log_level="WARNING")
    service = procs.start("run", ["run"], env)
    config.write_text(prometheus_config(api_port, learner_port))
    prom = start_prometheus(config, prom_port, tmp_path)
    prom_url = f"http://127.0.0.1:{prom_port}"

    def diagnose() -> str:
        log = (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
        return f"{procs.logs()}\n--- prometheus (exit {prom.poll()}) ---\n{log}"

    with contextlib.ExitStack() as stack:
        stack.callback(stop_group, prom)
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
        stack.callback(api.close)
        wait_for(lambda: service.popen.poll() is None
                 and api.get("/readyz").status_code == 200, 60, "the API ready", diagnose, 0.2)

        with httpx.Client(base_url=prom_url, timeout=10) as client:
            def targets_up() -> bool:
                assert prom.poll() is None, "prometheus exited"
                active = client.get("/api/v1/targets").json()["data"]["activeTargets"]
                health = {t["labels"]["job"]: t["health"] for t in active}
                return health == {"api": "up", "learner": "up"}

            wait_for(targets_up, 30, "both Prometheus targets up", diagnose, 0.2)
            # Traffic while Prometheus scrapes, so that rates and quantiles see it.
            sent = drive_traffic(api)
            wait_for(lambda: api.get("/v1/stats").json()["samples_seen"] >= sent, 30,
                     "the learner to process the feedback", diagnose, 0.2)

            def query(expr: str) -> list[dict[str, Any]]:
                body = client.get("/api/v1/query", params={"query": expr}).json()
                assert body["status"] == "success", (expr, body)
                return body["data"]["result"]

            # The per-tag gauges appear once the learner has evaluated a publish on the holdout.
            wait_for(lambda: query(f'mnemo_accuracy{{model="{MODEL}"}}'), 30,
                     "mnemo_accuracy scraped", diagnose, 0.2)
            values = client.get("/api/v1/label/model/values",
                                params={"match[]": "mnemo_model_version"}).json()
            assert values["data"] == [MODEL], values  # the `model` variable's options

            learner_text = httpx.get(f"http://127.0.0.1:{learner_port}/metrics").text
            missing_drift = {name for name in DRIFT_GAUGES  # not declared by the learner yet
                             if not re.search(rf"^# TYPE {name} ", learner_text, re.MULTILINE)}

            dashboards = load_dashboards()
            queries = [q for d in dashboards.values() for q in panel_queries(d)]
            assert len(queries) >= 25, len(queries)
            # Data: at least one series, and no NaN (a quantile or ratio over no traffic).
            def has_data(expr: str) -> bool:
                result = query(expr)
                return bool(result) and all(r["value"][1] != "NaN" for r in result)

            empty: dict[str, str] = {}
            deadline = time.monotonic() + 20  # rate() over fresh series needs a few scrapes
            pending = list(queries)
            while pending:
                still = []
                for q in pending:
                    if not has_data(substitute(q.expr)):
                        still.append(q)
                pending = [q for q in still if not metric_names(q.expr) & missing_drift]
                empty = {q.where: q.expr for q in pending}
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert not empty, f"panel queries without data (empty or NaN): {json.dumps(empty, indent=1)}"

            # The concept-drift annotation: valid PromQL; its series exists (no event yet, so
            # the `> 0` filter itself may leave nothing).
            for d in dashboards.values():
                for q in annotation_queries(d):
                    query(substitute(q.expr))
                    inner = re.sub(r"\s*>\s*0\s*$", "", q.expr)
                    assert query(substitute(inner)), f"{q.where}: no series for {inner}"
