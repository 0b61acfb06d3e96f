"""deploy/prometheus.yml as the tests run it, and a real Prometheus on it. The learner job
reads the API token from a credentials file named relative to the config (docker-compose.yml's
prometheus writes it there at start-up), and promtool refuses a config whose credentials file
is missing: so the tests use a copy of the config with that file beside it, and the alert rule
files it names (also relative to it) copied to the same places."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.procs import ROOT

CONFIG = ROOT / "deploy" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"


def job(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [j for j in config["scrape_configs"] if j["job_name"] == name]
    return found


def learner_credentials_file(config: dict[str, Any]) -> str:
    """The learner job's bearer credentials file, relative to the config's folder."""
    authorization = job(config, "learner")["authorization"]
    assert authorization["type"] == "Bearer", authorization
    path = authorization["credentials_file"]
    assert not Path(path).is_absolute(), path  # resolves next to the config, wherever it is
    return path


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_files(config: dict[str, Any]) -> list[str]:
    """The config's rule files, each relative to its folder and no glob (copied one by one)."""
    files: list[str] = config.get("rule_files") or []
    for path in files:
        assert not Path(path).is_absolute() and "*" not in path, path
    return files


def write_config(directory: Path, text: str, token: str) -> Path:
    """`text` as directory/prometheus.yml, with `token` in the learner's credentials file and
    the rule files beside it as they are beside deploy/prometheus.yml."""
    config = directory / "prometheus.yml"
    config.write_text(text)
    parsed = yaml.safe_load(text)
    (directory / learner_credentials_file(parsed)).write_text(token)
    for path in rule_files(parsed):
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CONFIG.parent / path, directory / path)
    return config


def promtool(*args: str) -> None:
    """`promtool *args`, which must succeed (its output is the failure message)."""
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install the Debian package `prometheus` (scripts/bootstrap-test-deps does)"
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def promtool_check(config: Path) -> None:
    promtool("check", "config", str(config))


# ---- a real Prometheus on it ----------------------------------------------------------------

def prometheus_config(api_port: int, learner_port: int) -> str:
    """deploy/prometheus.yml with each job's targets replaced by the test's ports (the `api`
    job discovers compose replicas by DNS there) and a 1 s scrape."""
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"api", "learner"}, set(jobs)
    for name, port in (("api", api_port), ("learner", learner_port)):
        for discovery in [k for k in jobs[name] if k.endswith("_sd_configs") or k == "static_configs"]:
            del jobs[name][discovery]
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    return yaml.safe_dump(config)


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    assert binary, ("the `prometheus` binary is not installed: `apt-get install prometheus` "
                    "(scripts/bootstrap-test-deps installs it; `make test` runs it)")
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


class Prom:
    """Instant queries against the test's Prometheus."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(expr)}
