"""The Grafana dashboards in deploy/ against a real Prometheus. `python -m service run` gets a
stream with a covariate shift (half the features move) and later a label swap, while a
`prometheus` binary scrapes it through a copy of deploy/prometheus.yml pointed at the test's
ports (the service has an API token, which the learner job sends from its credentials file).
Through Prometheus's HTTP API: both processes export the process collectors and
mnemo_build_info; PSI-max stays under its calibrated level (drawn on the same panel) before the
shift and crosses it after, raising the psi alarm; the concept-drift counter stays 0 until the
swap and then rises; at the end every panel query of every dashboard answers with finite data,
the panels that show a /v1/stats figure (thresholds and alarms included) agree with it, and
deploy/prometheus/alerts.yml is loaded, evaluates without error and has the drift alert
pending. Also: the dashboards parse, carry the `model` variable, use the provisioned datasource
and only docs/DESIGN.md §7 metric names.

`prometheus` (the Debian package) is installed by scripts/bootstrap-test-deps (`make test` runs it)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.version import package_version
from tests.conftest import free_port
from tests.e2e.procs import Procs, base_env, wait_for
from tests.e2e.traffic import DIM, SHIFTED, Stream
from tests.observability.promconfig import (
    CONFIG,
    Prom,
    alert_rules,
    job,
    prometheus_binary,
    prometheus_config,
    promtool_check,
    start_prometheus,
    stop_group,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
MODEL = "obs-test"
TOKEN = "obs-test-token"
RATE_INTERVAL, INTERVAL = "1m", "5s"  # what Grafana would pick at a 1 s scrape, with margin

# docs/DESIGN.md §7, fixed names; histograms expand to their series below.
COUNTERS = {"mnemo_predict_requests_total", "mnemo_feedback_items_total",
            "mnemo_model_swaps_total", "mnemo_model_load_failures_total",
            "mnemo_learner_samples_total", "mnemo_learner_steps_total",
            "mnemo_model_publish_total", "mnemo_concept_drift_events_total"}
GAUGES = {"mnemo_model_version", "mnemo_learner_loss", "mnemo_learner_penalty",
          "mnemo_feedback_lag_items", "mnemo_reservoir_size", "mnemo_prequential_accuracy",
          "mnemo_balanced_accuracy", "mnemo_accuracy", "mnemo_forgetting", "mnemo_drift_psi",
          "mnemo_drift_psi_max", "mnemo_drift_prediction_js", "mnemo_drift_label_js",
          "mnemo_drift_threshold", "mnemo_drift_alarm"}
HISTOGRAMS = {"mnemo_predict_latency_seconds", "mnemo_predict_batch_size",
              "mnemo_update_freshness_seconds"}
# Every process's own: build info and prometheus_client's collectors (no panel needs them all).
PROCESS = {"mnemo_build_info", "process_resident_memory_bytes", "process_cpu_seconds_total",
           "python_info"}
SECTION_7 = (COUNTERS | GAUGES | PROCESS
             | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")})


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
            assert not unknown, f"{q.where}: not a docs/DESIGN.md §7 metric: {unknown}"
    used = {n for d in dashboards.values() for q in panel_queries(d) for n in metric_names(q.expr)}
    expected = COUNTERS | GAUGES | {f"{h}_bucket" for h in HISTOGRAMS}
    assert not expected - used, f"§7 metrics on no dashboard panel: {sorted(expected - used)}"
    drift = next(d for d in dashboards.values() if d["title"] == "Mnemo / Drift")
    annotation = annotation_queries(drift)
    assert len(annotation) == 1
    assert re.fullmatch(r"changes\(mnemo_concept_drift_events_total\{[^}]*\}\[\w+\]\) > 0",
                        annotation[0].expr), annotation[0].expr


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool_check(write_config(tmp_path, CONFIG.read_text(), TOKEN))
    # The API's /metrics is open (no tag names there): only the learner job sends the token.
    assert "authorization" not in job(yaml.safe_load(CONFIG.read_text()), "api")


# ---- against a real Prometheus ---------------------------------------------------------------

# Panels that show a /v1/stats figure: (dashboard uid, panel title, refId) → how to read the
# figure from the stats JSON, and the tolerance (0.01 for accuracies; the others are the
# same number on both sides). A dict is one value per label of the query's `by (label)`.
def _tags(stats: dict[str, Any], field: str) -> dict[str, float]:
    return {tag: entry[field] for tag, entry in (stats["tags"] or {}).items()}


def _alarms(stats: dict[str, Any]) -> dict[str, float]:
    return {s: float(s in stats["drift"]["alarms"]) for s in ("psi", "prediction_js", "label_js")}


STATS_PANELS: dict[tuple[str, str, str], tuple[Any, float]] = {
    ("mnemo-learning", "Prequential and balanced accuracy", "A"):
        (lambda s: s["prequential_accuracy"], 0.01),
    ("mnemo-learning", "Prequential and balanced accuracy", "B"):
        (lambda s: s["balanced_accuracy"], 0.01),
    ("mnemo-learning", "Holdout accuracy by tag", "A"): (lambda s: _tags(s, "accuracy"), 0.01),
    ("mnemo-learning", "Forgetting by tag", "A"): (lambda s: _tags(s, "forgetting"), 0.01),
    ("mnemo-learning", "Feedback lag", "A"): (lambda s: s["feedback_lag"], 0.0),
    ("mnemo-learning", "Replay reservoir size", "A"): (lambda s: s["reservoir_size"], 0.0),
    ("mnemo-drift", "PSI, max over features", "A"): (lambda s: s["drift"]["psi_max"], 1e-9),
    ("mnemo-drift", "PSI, max over features", "B"): (lambda s: s["drift"]["psi_threshold"], 1e-9),
    ("mnemo-drift", "Prediction and label drift (JS divergence)", "A"):
        (lambda s: s["drift"]["prediction_js"], 1e-9),
    ("mnemo-drift", "Prediction and label drift (JS divergence)", "B"):
        (lambda s: s["drift"]["label_js"], 1e-9),
    ("mnemo-drift", "Prediction and label drift (JS divergence)", "C"):
        (lambda s: s["drift"]["prediction_js_threshold"], 1e-9),
    ("mnemo-drift", "Prediction and label drift (JS divergence)", "D"):
        (lambda s: s["drift"]["label_js_threshold"], 1e-9),
    ("mnemo-drift", "Drift alarms", "A"): (_alarms, 0.0),
    ("mnemo-service", "Served version per process", "A"): (lambda s: s["model_version"], 0.0),
}


def panel_targets() -> dict[tuple[str, str, str], str]:
    return {(d["uid"], panel["title"], t["refId"]): t["expr"]
            for d in load_dashboards().values() for panel in d["panels"]
            for t in panel.get("targets", [])}


def test_dashboards_follow_a_covariate_shift_and_a_label_swap(tmp_path: Path, procs: Procs) -> None:
    prometheus_binary()  # before starting anything
    prom_port = free_port()
    api_port, learner_port = free_port(), free_port()
    env = base_env(data_dir=tmp_path / "data", port=api_port, learner_metrics_port=learner_port,
                   model_name=MODEL, input_dim=DIM, labels="a,b", publish_every_seconds=1,
                   holdout_fraction=0.5, log_level="WARNING", api_token=TOKEN)
    service = procs.start("run", ["run"], env)
    config = write_config(tmp_path, prometheus_config(api_port, learner_port), TOKEN)
    prom_proc = start_prometheus(config, prom_port, tmp_path)
    targets = panel_targets()
    assert set(STATS_PANELS) <= set(targets), set(STATS_PANELS) - set(targets)

    def diagnose() -> str:
        log = (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
        return f"{procs.logs()}\n--- prometheus (exit {prom_proc.poll()}) ---\n{log}"

    with contextlib.ExitStack() as stack:
        stack.callback(stop_group, prom_proc)
        api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30,
                                               headers={"Authorization": f"Bearer {TOKEN}"}))
        prom = Prom(stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{prom_port}",
                                                     timeout=10)))
        wait_for(lambda: service.popen.poll() is None
                 and api.get("/readyz").status_code == 200, 60, "the API ready", diagnose, 0.2)

        def targets_up() -> bool:
            assert prom_proc.poll() is None, "prometheus exited"
            active = prom.client.get("/api/v1/targets").json()["data"]["activeTargets"]
            return {t["labels"]["job"]: t["health"] for t in active} == {"api": "up", "learner": "up"}

        wait_for(targets_up, 30, "both Prometheus targets up", diagnose, 0.2)
        # Both processes export the process collectors and their build info.
        for name in ("api", "learner"):
            (build,) = prom.query(f'mnemo_build_info{{job="{name}"}}')
            assert (build["metric"]["version"], build["metric"]["model"]) == (
                package_version(), MODEL), build
            for metric in ("process_resident_memory_bytes", "process_open_fds", "python_info"):
                assert prom.query(f'{metric}{{job="{name}"}}'), (name, metric)
        stream = Stream(api)
        drift_events = f'mnemo_concept_drift_events_total{{model="{MODEL}"}}'
        psi_panel = substitute(targets[("mnemo-drift", "PSI, max over features", "A")])
        level_panel = substitute(targets[("mnemo-drift", "PSI, max over features", "B")])
        alarms_panel = substitute(targets[("mnemo-drift", "Drift alarms", "A")])

        def settled() -> dict[str, Any]:
            """/v1/stats once the learner has processed everything sent and its stats stopped
            moving, after Prometheus has scraped the learner since."""
            def stable() -> dict[str, Any] | None:
                first = api.get("/v1/stats").json()
                if first["samples_seen"] < stream.sent or first["feedback_lag"]:
                    return None
                time.sleep(2.5)  # > the learner's 1 s stats period
                return first if api.get("/v1/stats").json() == first else None

            stats = wait_for(stable, 90, "the learner to settle", diagnose, 0.2)
            since = time.time()
            wait_for(lambda: prom.value(f"timestamp({drift_events})") > since + 0.1, 15,
                     "a learner scrape after the learner settled", diagnose, 0.2)
            return stats

        # 1. Stationary: 1,600 sampled inputs fill the reference (1,000) and the window (500).
        stream.send(200)
        before = settled()
        level = before["drift"]["psi_threshold"]
        assert level is not None and before["drift"]["psi_max"] is not None, before["drift"]
        assert prom.value(psi_panel) == pytest.approx(before["drift"]["psi_max"], rel=1e-9)
        assert prom.value(psi_panel) < level, (prom.value(psi_panel), level)
        assert prom.value(level_panel) == pytest.approx(level, rel=1e-9)
        assert prom.by_label(alarms_panel, "statistic")["psi"] == 0
        assert prom.value(drift_events) == 0 and before["drift"]["concept_drift_events"] == 0

        # 2. Covariate shift: 560 rows with half the features moved; the label rule is unchanged.
        stream.send(70, shift=True)
        shifted = settled()
        assert shifted["drift"]["psi_threshold"] == level  # same reference, same level
        assert prom.value(psi_panel) == pytest.approx(shifted["drift"]["psi_max"], rel=1e-9)
        assert prom.value(psi_panel) > level, (prom.value(psi_panel), level)
        assert prom.by_label(alarms_panel, "statistic")["psi"] == 1
        top = prom.by_label(substitute(targets[("mnemo-drift", "PSI, top features", "A")]),
                            "feature")
        moved = {str(j) for j in range(SHIFTED.start, SHIFTED.stop)}
        assert set(sorted(top, key=top.__getitem__, reverse=True)[:4]) == moved, top
        assert prom.value(drift_events) == 0 and shifted["drift"]["concept_drift_events"] == 0
        print(f"\nPSI-max level {level:.4f}: {before['drift']['psi_max']:.4f} before the shift, "
              f"{shifted['drift']['psi_max']:.4f} after; top features {top}")

        # 3. Label swap (still shifted): the concept-drift detector fires.
        for _ in range(20):
            stream.send(10, shift=True, swap=True)
            if api.get("/v1/stats").json()["drift"]["concept_drift_events"]:
                break
        wait_for(lambda: prom.value(drift_events) > 0, 30, "the drift counter scraped", diagnose,
                 0.2)
        # ...and goes on for a window (500 sampled inputs) more.
        stream.send(200, shift=True, swap=True)
        for _ in range(3):
            assert api.post("/v1/predict", json={"inputs": [[1.0, 2.0]]}).status_code == 422
        final = settled()
        assert final["drift"]["concept_drift_events"] >= 1
        assert prom.value(drift_events) == final["drift"]["concept_drift_events"]
        # A concept drift changes answers, not inputs: the covariate reference survives the
        # event (DriftMonitor.on_concept_drift), so the shift still alarms at the same level.
        assert final["drift"]["psi_max"] is not None, final["drift"]
        assert final["drift"]["psi_threshold"] == level
        assert final["drift"]["psi_max"] > level and "psi" in final["drift"]["alarms"], final["drift"]
        print(f"after the swap ({stream.sent} labels): {final['drift']}; "
              f"prequential {final['prequential_accuracy']}, tags {final['tags']}")

        # Every panel query answers with finite data of a mnemo_* metric...
        for (uid, title, ref), expr in targets.items():
            result = prom.query(substitute(expr))
            assert result, f"{uid} / {title} / {ref}: no series for {expr}"
            values = [float(r["value"][1]) for r in result]
            assert all(math.isfinite(v) for v in values), (uid, title, ref, values)
        # ...the panels that show a /v1/stats figure agree with it...
        for key, (read, tolerance) in STATS_PANELS.items():
            expected = read(final)
            expr = substitute(targets[key])
            if isinstance(expected, dict):
                by = re.search(r"\bby \((\w+)\)", expr)
                assert by, (key, expr)
                got = prom.by_label(expr, by.group(1))
                assert set(got) == set(expected), (key, got, expected)
                for tag, value in expected.items():
                    assert got[tag] == pytest.approx(value, abs=tolerance), (key, tag, got, expected)
            else:
                assert expected is not None, key
                assert prom.value(expr) == pytest.approx(expected, abs=tolerance), (key, expected)
        # ...the `model` variable lists the model, and the concept-drift annotation fires.
        values = prom.client.get("/api/v1/label/model/values",
                                 params={"match[]": "mnemo_model_version"}).json()
        assert values["data"] == [MODEL], values
        drift = next(d for d in load_dashboards().values() if d["uid"] == "mnemo-drift")
        (annotation,) = annotation_queries(drift)
        assert prom.query(substitute(annotation.expr).replace(f"[{RATE_INTERVAL}]", "[10m]"))
        # The alert rules are loaded and evaluate cleanly on the real series; the psi alarm,
        # on since the shift, has its alert pending (firing, on a run slower than its 5 min
        # `for:`), and the learner is not down.
        rules = [r for g in prom.client.get("/api/v1/rules").json()["data"]["groups"]
                 for r in g["rules"]]
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}, rules
        assert all(r["health"] == "ok" for r in rules), rules
        alerts = prom.client.get("/api/v1/alerts").json()["data"]["alerts"]
        drift_alerts = [(a["labels"]["model"], a["state"]) for a in alerts
                        if a["labels"]["alertname"] == "MnemoDriftAlarm"
                        and a["labels"].get("statistic") == "psi"]
        assert drift_alerts in ([(MODEL, "pending")], [(MODEL, "firing")]), alerts
        assert not [a for a in alerts if a["labels"]["alertname"] == "MnemoLearnerDown"], alerts
