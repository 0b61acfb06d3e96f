"""deploy/prometheus.yml as the tests run it. The learner job reads the API token from a
credentials file named relative to the config (docker-compose.yml's prometheus writes it there
at start-up), and promtool refuses a config whose credentials file is missing: so the tests use
a copy of the config with that file beside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.procs import ROOT

CONFIG = ROOT / "deploy" / "prometheus.yml"


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


def write_config(directory: Path, text: str, token: str) -> Path:
    """`text` as directory/prometheus.yml, with `token` in the learner's credentials file."""
    config = directory / "prometheus.yml"
    config.write_text(text)
    (directory / learner_credentials_file(yaml.safe_load(text))).write_text(token)
    return config


def promtool_check(config: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install the Debian package `prometheus` (.ci/run does)"
    check = subprocess.run([promtool, "check", "config", str(config)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
