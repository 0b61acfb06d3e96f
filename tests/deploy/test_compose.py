"""docker-compose.yml, the Dockerfile and .dockerignore, checked against the repository (no
Docker engine here): every command they run is a CLI subcommand (run the same way the tests
start the service), every port is a configuration default, every path they copy or mount
exists, every MNEMO_* name is a setting, every health endpoint is a route, Prometheus and
Grafana find what compose names, secrets have no defaults, Prometheus and the learner's health
check send the API token the learner's /metrics wants, Redis is bounded by a maxmemory and a
memory limit sized from the retention figures, the `gpu` profile hands its learner a GPU, and
the image installs the dependencies the tests run with."""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from packaging.requirements import Requirement
from prometheus_client import CollectorRegistry
from starlette.routing import Match

from service.api import create_app
from service.config import Settings, known_env_names, load_settings
from service.monitor.metrics_server import start_metrics_server
from tests.conftest import free_port
from tests.deploy.redis_sizing import (
    LIMIT_OVER_MAXMEMORY,
    docker_bytes,
    redis_bytes,
    sustained_labels_per_second,
)
from tests.e2e.procs import ROOT
from tests.observability.promconfig import (
    CONFIG,
    job,
    learner_credentials_file,
    promtool_check,
    rule_files,
    write_config,
)

DEPLOY = ROOT / "deploy"
MNEMO_SERVICES = ("api", "learner")  # built from the Dockerfile
DEFAULTS = Settings()
# A secret is given by the environment or compose refuses to start: ${NAME:?message}.
REQUIRED = re.compile(r"^\$\{([A-Z_]+):\?[^}]+\}$")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def instructions(name: str) -> list[str]:
    return [args for kind, args in dockerfile() if kind == name]


def index_of(kind: str, needle: str) -> int:
    return next(i for i, (k, args) in enumerate(dockerfile()) if k == kind and needle in args)


def is_route(path: str) -> bool:
    """Whether the app (built with the default settings) has a GET route for `path`."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in create_app(DEFAULTS).routes)


def health_url(test: list[str]) -> str:
    """The URL a ["CMD", "python", "-c", "…urlopen('…')…"] (or wget) health check fetches."""
    found = re.search(r"https?://[^'\" ]+", " ".join(test))
    assert found, test
    return found.group(0)


# ---- commands --------------------------------------------------------------------------------

def cli_help(subcommand: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", subcommand, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_command_is_a_cli_subcommand_started_as_the_tests_start_it() -> None:
    procs_source = (ROOT / "tests" / "e2e" / "procs.py").read_text()
    assert '[sys.executable, "-m", "service", *args]' in procs_source  # how e2e tests start it
    commands = {name: services()[name]["command"] for name in MNEMO_SERVICES}
    commands["Dockerfile CMD"] = json.loads(instructions("CMD")[-1])
    assert commands == {"api": ["python", "-m", "service", "serve"],
                        "learner": ["python", "-m", "service", "learn"],
                        "Dockerfile CMD": ["python", "-m", "service", "run"]}
    for name, command in commands.items():
        assert cli_help(command[-1]).returncode == 0, (name, command)
    assert cli_help("no-such-role").returncode == 2  # the check can fail


# ---- ports, environment, health ---------------------------------------------------------------

def test_ports_are_the_configuration_defaults() -> None:
    assert (DEFAULTS.port, DEFAULTS.learner_metrics_port) == (8000, 9101)
    assert instructions("EXPOSE") == [f"{DEFAULTS.port} {DEFAULTS.learner_metrics_port}"]
    api = services()["api"]
    replicas = api["deploy"]["replicas"]
    assert replicas == 2
    (mapping,) = api["ports"]
    host, container = mapping.rsplit(":", 1)
    assert int(container) == DEFAULTS.port
    first, last = (int(p) for p in host.split("-"))
    assert last - first + 1 == replicas  # one host port per replica: no collision
    assert "ports" not in services()["learner"]  # scraped on the compose network only
    for name, port, path in (("api", DEFAULTS.port, "/readyz"),
                             ("learner", DEFAULTS.learner_metrics_port, "/metrics")):
        url = urlparse(health_url(services()[name]["healthcheck"]["test"]))
        assert (url.port, url.path) == (port, path), name


def test_health_endpoints_are_routes_of_the_app() -> None:
    checked = [urlparse(health_url(services()["api"]["healthcheck"]["test"])).path,
               urlparse(health_url([instructions("HEALTHCHECK")[-1]])).path]
    assert checked == ["/readyz", "/healthz"]
    assert urlparse(health_url([instructions("HEALTHCHECK")[-1]])).port == DEFAULTS.port
    assert all(is_route(path) for path in checked)
    assert not is_route("/nowhere")
    # The learner serves prometheus_client's /metrics, the path Prometheus scrapes too.
    assert job(yaml.safe_load(CONFIG.read_text()), "learner")["metrics_path"] == "/metrics"


def test_environment_names_are_settings_and_secrets_have_no_defaults() -> None:
    known = known_env_names()
    env: dict[str, str] = dict(services()["api"]["environment"])
    assert env == services()["learner"]["environment"]
    dockerfile_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(instructions("ENV"))))
    names = {n for n in [*env, *dockerfile_env] if n.startswith("MNEMO_")}
    assert names - known == set(), names - known
    assert {"MNEMO_REDIS_URL", "MNEMO_HOST", "MNEMO_API_TOKEN", "MNEMO_ADMIN_TOKEN"} <= names
    assert dockerfile_env["MNEMO_HOST"] == "0.0.0.0"  # reachable from other containers
    assert env["MNEMO_REDIS_URL"] == "redis://redis:6379/0" and "redis" in services()
    secrets = {"MNEMO_API_TOKEN": env["MNEMO_API_TOKEN"], "MNEMO_ADMIN_TOKEN": env["MNEMO_ADMIN_TOKEN"],
               "GRAFANA_ADMIN_PASSWORD": services()["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]}
    for name, value in secrets.items():
        required = REQUIRED.match(value)
        assert required and required.group(1) == name, (name, value)
    every_value = json.dumps(compose())
    assert not re.search(r"(TOKEN|PASSWORD)[A-Z_]*:-", every_value), "a secret with a default"


def test_services_wait_for_healthy_dependencies() -> None:
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    for name, service in services().items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services()[dependency], dependency
    assert set(services()["api"]["depends_on"]) == {"redis"}
    assert set(services()["grafana"]["depends_on"]) == {"prometheus"}


def interpolated(value: str) -> str:
    """A compose value as compose fills it in with nothing set in the environment: the default of
    ${NAME:-default}, a stand-in for a required ${NAME:?message}."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "a-secret", value)


def test_redis_is_bounded_and_sized_from_the_retention_figures() -> None:
    """maxmemory with noeviction (past it writes fail with 503, nothing is evicted) and a
    container memory limit above it; maxmemory holds everything the model's settings bound
    (tests/deploy/redis_sizing.py: prediction log, feedback stream, kept versions) with room for
    the dedupe ids of a useful label rate at the default prediction TTL."""
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = redis_bytes(command[command.index("--maxmemory") + 1])
    limit = docker_bytes(redis["deploy"]["resources"]["limits"]["memory"])
    assert limit >= LIMIT_OVER_MAXMEMORY * maxmemory
    env = {name: interpolated(value) for name, value in services()["api"]["environment"].items()}
    model = load_settings(env)  # the one model compose serves, as its containers see it
    assert 10 <= sustained_labels_per_second(maxmemory, [model]) <= 500  # sized, not oversized
    # The reasoning is written beside the figures.
    text = (ROOT / "docker-compose.yml").read_text()
    for figure in ("MNEMO_PREDICTION_LOG_MAX_BYTES", "MNEMO_MAX_LAG", "MNEMO_KEEP_VERSIONS",
                   "MNEMO_PREDICTION_TTL_SECONDS"):
        assert figure in text, figure


def test_the_gpu_profile_hands_its_learner_a_gpu() -> None:
    gpu = services()["learner-gpu"]
    # Only with `--profile gpu`: a plain `docker compose up` is unchanged.
    assert [name for name, service in services().items() if "profiles" in service] == ["learner-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert gpu["command"] == services()["learner"]["command"]
    assert gpu["environment"] == {**services()["learner"]["environment"], "MNEMO_DEVICE": "cuda"}
    assert gpu["healthcheck"] == services()["learner"]["healthcheck"]
    assert gpu["depends_on"] == services()["learner"]["depends_on"]
    # The CUDA variant of the image, under its own tag: the API keeps the CPU one.
    assert re.fullmatch(r"\$\{TORCH_VARIANT_GPU:-cu\d+\}", gpu["build"]["args"]["TORCH_VARIANT"])
    assert gpu["build"]["context"] == "." and gpu["image"] == "mnemo:cuda" != services()["api"]["image"]
    # It replaces the CPU learner (`--scale learner=0`): Prometheus scrapes it as `learner`,
    # and nothing waits on the CPU learner being there.
    assert gpu["networks"]["default"]["aliases"] == ["learner"]
    (learner,) = job(yaml.safe_load(CONFIG.read_text()), "learner")["static_configs"]
    assert [target.split(":")[0] for target in learner["targets"]] == ["learner"]
    assert all("learner" not in service.get("depends_on", {}) for service in services().values())
    for doc in (ROOT / "docker-compose.yml", ROOT / "docs" / "OPERATIONS.md"):
        assert "docker compose --profile gpu up --scale learner=0" in doc.read_text(), doc


# ---- paths, Prometheus, Grafana -------------------------------------------------------------

def mounts(service: str) -> dict[str, str]:
    """Bind mounts of a service: container path -> repository path."""
    out = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


def test_every_path_copied_or_mounted_exists_and_is_not_ignored() -> None:
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    copied = [src for args in instructions("COPY") for src in shlex.split(args)[:-1]
              if not src.startswith("--")]
    assert copied == ["pyproject.toml", "deploy/requirements.py", "README.md", "LICENSE", "models",
                      "service", "mnemo_client"]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # Package data the page needs travels with `service/` (pyproject package-data).
    assert (ROOT / "service" / "api" / "static" / "dashboard.js").exists()
    bound = [source for name in services() for source in mounts(name).values()]
    assert len(bound) == 4
    for source in bound:
        assert (ROOT / source).exists(), source
    assert compose()["services"]["api"]["build"]["context"] == "."


def test_prometheus_scrapes_every_replica_and_the_learner(tmp_path: Path) -> None:
    mounted = mounts("prometheus")
    assert mounted == {"/etc/prometheus/prometheus.yml": "./deploy/prometheus.yml",
                       "/etc/prometheus/prometheus": "./deploy/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in services()["prometheus"]["command"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (dns,) = jobs["api"]["dns_sd_configs"]
    assert (dns["names"], dns["type"], dns["port"]) == (["api"], "A", DEFAULTS.port)
    (learner,) = jobs["learner"]["static_configs"]
    assert learner["targets"] == [f"learner:{DEFAULTS.learner_metrics_port}"]
    assert set(jobs) <= set(services())  # job names are compose service names
    promtool_check(write_config(tmp_path, CONFIG.read_text(), "a-token"))


def test_prometheus_finds_the_alert_rules_where_compose_mounts_them() -> None:
    """Each rule file, relative to the mounted config, lands in a mount whose repository
    source holds that very file (deploy/prometheus/alerts.yml)."""
    config_dir = posixpath.dirname(next(iter(mounts("prometheus"))))
    files = rule_files(yaml.safe_load(CONFIG.read_text()))
    assert files == ["prometheus/alerts.yml"]
    for path in files:
        inside = posixpath.join(config_dir, path)
        (target, source), = [(t, s) for t, s in mounts("prometheus").items()
                             if inside.startswith(t + "/")]
        assert (ROOT / source / posixpath.relpath(inside, target)) == DEPLOY / path
        assert (DEPLOY / path).is_file()


def test_prometheus_writes_the_api_token_where_the_learner_job_reads_it(tmp_path: Path) -> None:
    """The prometheus service's entrypoint, run here by sh with /etc/prometheus moved under
    tmp_path and /bin/prometheus replaced by echo: it writes the token, exactly, owner-only,
    to the learner job's credentials file (relative to the mounted config), and hands the
    service's command to the binary unchanged."""
    prometheus = services()["prometheus"]
    assert prometheus["environment"] == {"MNEMO_API_TOKEN": services()["api"]["environment"][
        "MNEMO_API_TOKEN"]}  # the same required secret, no default
    config_dir = posixpath.dirname(next(iter(mounts("prometheus"))))
    shell, flag, script, name = prometheus["entrypoint"]
    assert (shell, flag) == ("/bin/sh", "-c")
    script = (script.replace("$$", "$")  # compose's escape for a literal $
              .replace(f"{config_dir}/", f"{tmp_path}/").replace("/bin/prometheus", "/bin/echo"))
    token = "tok en$'\"\\"  # spaces and shell metacharacters arrive as they are
    done = subprocess.run(["/bin/sh", "-c", script, name, *prometheus["command"]],
                          env={"PATH": os.environ["PATH"], "MNEMO_API_TOKEN": token},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == " ".join(prometheus["command"]) + "\n"
    written = tmp_path / learner_credentials_file(yaml.safe_load(CONFIG.read_text()))
    assert written.read_text() == token
    assert written.stat().st_mode & 0o777 == 0o600


def test_the_learner_health_check_sends_the_api_token() -> None:
    """The learner's health check, run here against a real learner metrics server (its port
    moved to a free one): healthy with the container's token, unhealthy with another."""
    test = services()["learner"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    port = free_port()
    server = start_metrics_server(CollectorRegistry(), "127.0.0.1", port, "the-token")
    try:
        code = test[3].replace(f":{DEFAULTS.learner_metrics_port}/", f":{port}/")
        assert code != test[3]
        outcomes = {}
        for token in ("the-token", "another"):
            env = {**os.environ, "MNEMO_API_TOKEN": token}
            outcomes[token] = subprocess.run([sys.executable, "-c", code], env=env,
                                             capture_output=True, timeout=30).returncode
    finally:
        server.stop()
    assert outcomes["the-token"] == 0 and outcomes["another"] != 0, outcomes


def test_grafana_mounts_are_where_its_provisioning_looks() -> None:
    mounted = mounts("grafana")
    assert mounted["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/mnemo.yml").read_text())
    (path,) = [p["options"]["path"] for p in provider["providers"]]
    assert mounted[path] == "./deploy/grafana/dashboards"
    assert len(list((ROOT / mounted[path]).glob("*.json"))) == 3
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert "9090:9090" in services()["prometheus"]["ports"]


# ---- the image ------------------------------------------------------------------------------

def test_dockerfile_is_slim_non_root_and_installs_dependencies_before_the_source() -> None:
    assert instructions("FROM") == ["python:3.11-slim"]
    assert instructions("ARG") == ["TORCH_VARIANT=cpu"]
    (user,) = instructions("USER")
    assert user not in ("root", "0") and index_of("USER", user) < index_of("CMD", "service")
    deps = index_of("RUN", "requirements.txt")
    assert index_of("COPY", "pyproject.toml") < deps < index_of("COPY", "service")
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in dockerfile()[deps][1]
    assert index_of("RUN", "--no-deps .") > index_of("COPY", "service")
    assert services()["api"]["build"]["args"]["TORCH_VARIANT"] == "${TORCH_VARIANT:-cpu}"


def image_requirements() -> list[str]:
    """The Dockerfile's own requirements command, run here."""
    run = next(args for args in instructions("RUN") if "requirements.py" in args)
    command = shlex.split(run.split("&&")[0].split(">")[0])
    assert command[:2] == ["python", "requirements.py"]
    done = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"),
                           *[str(ROOT / a) if a.endswith(".toml") else a for a in command[2:]]],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()  # one a line; a line may hold an environment marker


def test_the_image_installs_what_the_tests_run_with() -> None:
    import tomllib

    requirements = image_requirements()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert requirements == [*project["dependencies"], *extras["report"]]
    # `make install` (what `make test` runs on) installs `.[dev]`, which has the report
    # extra's packages; this very environment satisfies every line the image installs.
    assert "'.[dev]'" in (ROOT / "Makefile").read_text()
    assert {Requirement(r).name for r in extras["report"]} <= {Requirement(r).name for r in extras["dev"]}
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this platform (uvloop on Windows)
        assert requirement.specifier.contains(version(requirement.name), prereleases=True), line
    # The Dockerfile's grep picks exactly the torch line, to install it from PyTorch's index.
    pattern = re.search(r"grep -E '([^']+)' requirements.txt", " ".join(instructions("RUN")))
    assert pattern
    assert [r for r in requirements if re.search(pattern.group(1), r)] == [
        r for r in requirements if Requirement(r).name == "torch"]


def test_requirements_script_refuses_an_unknown_extra() -> None:
    done = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"),
                           str(ROOT / "pyproject.toml"), "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "unknown extra" in done.stderr
