"""deploy/k8s/, rendered by kustomize (`kubectl kustomize`, or a standalone `kustomize build`)
and checked offline, with no cluster: every object of the base and of each overlay validates
against the Kubernetes schemas (kubernetes-validate's bundled copies, strict, so an unknown
field fails) at the oldest and the newest version checked, and the ServiceMonitors against
tests/deploy/schemas/ (no CRD schema is bundled); then what the manifests promise: the probes
are the app's routes on its ports, the learners are two and probed as compose probes them,
every pod runs non-root on a read-only root filesystem with no capabilities and writes only to
an emptyDir, every MNEMO_* name is a setting and the whole environment loads (models file
included), the GPU overlay hands the learner a GPU and the CUDA image compose builds, the
ServiceMonitors find the Services under the job names the alerts use, the dashboards ConfigMap
holds every dashboard, and the try-it overlay's Redis is sized for its models.

kustomize comes from scripts/bootstrap-test-deps (make test and .ci/run call it); without one
the tests fail saying so, never skip."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.catalog import load_models
from service.config import known_env_names, load_settings
from tests.deploy.redis_sizing import (
    LIMIT_OVER_MAXMEMORY,
    kubernetes_bytes,
    redis_bytes,
    sustained_labels_per_second,
)
from tests.deploy.test_compose import DEFAULTS, DEPLOY, is_route, services
from tests.e2e.procs import ROOT

K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = {"base": K8S / "base", **{name: K8S / "overlays" / name for name in OVERLAYS}}
# The oldest Kubernetes the manifests are checked against, and the newest the package knows.
SCHEMA_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
VENDORED_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        Path(__file__).parent / "schemas" / "servicemonitor-monitoring.coreos.com-v1.json",
}
BOOTSTRAP = "scripts/bootstrap-test-deps"
WORKLOADS = ("Deployment", "StatefulSet")
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
# What `kubectl apply` (client-side) can store of an object in its last-applied annotation.
LAST_APPLIED_LIMIT = 262_144


# ---- rendering ------------------------------------------------------------------------------

def _major(version: str) -> int:
    found = re.match(r"v?(\d+)\.", version.strip())
    return int(found.group(1)) if found else 0


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@cache
def kustomize() -> tuple[str, ...]:
    """kubectl's built-in kustomize, else a standalone one: v5 or newer (what the
    kustomizations use: `labels`, `patches`, generator options). None: the test fails with the
    command that installs one."""
    seen = []
    if kubectl := shutil.which("kubectl"):
        done = _run([kubectl, "version", "--client", "-o", "json"])
        version = json.loads(done.stdout).get("kustomizeVersion", "") if done.returncode == 0 else ""
        if _major(version) >= 5:
            return (kubectl, "kustomize")
        seen.append(f"{kubectl} with kustomize {version or '?'}")
    if standalone := shutil.which("kustomize"):
        done = _run([standalone, "version"])
        if done.returncode == 0 and _major(done.stdout) >= 5:
            return (standalone, "build")
        seen.append(f"{standalone} {done.stdout.strip() or '?'}")
    pytest.fail(f"deploy/k8s needs kustomize v5 or newer to render (kubectl kustomize or kustomize "
                f"build); found {', '.join(seen) or 'neither on PATH'}. Run: {BOOTSTRAP}")


@cache
def render(name: str) -> tuple[dict[str, Any], ...]:
    done = _run([*kustomize(), str(KUSTOMIZATIONS[name])])
    assert done.returncode == 0, f"kustomize {name}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in render(name) if obj["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> dict[str, Any]:
    found = [obj for obj in objects(name, kind) if obj["metadata"]["name"] == object_name]
    assert len(found) == 1, (name, kind, object_name, len(found))
    return found[0]


def workloads(name: str) -> Iterator[dict[str, Any]]:
    for obj in render(name):
        if obj["kind"] in WORKLOADS:
            yield obj


def container(workload: dict[str, Any], container_name: str) -> dict[str, Any]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"]
                if c["name"] == container_name]
    return found


def is_mnemo(c: dict[str, Any]) -> bool:
    return c["image"].split(":")[0].rsplit("/", 1)[-1] == "mnemo"


def mnemo_containers(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in workloads(name):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            if is_mnemo(c):
                yield workload, c


def api(name: str) -> dict[str, Any]:
    return one(name, "Deployment", "mnemo-api")


def learner(name: str) -> dict[str, Any]:
    return one(name, "Deployment", "mnemo-learner")


def named(name: str, kind: str, prefix: str) -> dict[str, Any]:
    """The generated ConfigMap or Secret whose name is `prefix` plus kustomize's hash."""
    (found,) = [obj for obj in objects(name, kind)
                if re.fullmatch(re.escape(prefix) + r"(-[a-z0-9]{10})?", obj["metadata"]["name"])]
    return found


def data(obj: dict[str, Any]) -> dict[str, str]:
    """A ConfigMap's or a Secret's data as text."""
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
    return dict(obj.get("data", {}))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---- kustomize output, against the schemas --------------------------------------------------

def schema_errors(obj: dict[str, Any]) -> list[str]:
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    vendored = VENDORED_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if vendored is not None:
        validator = jsonschema.Draft202012Validator(json.loads(vendored.read_text()))
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}"
                for e in validator.iter_errors(obj)]
    errors = []
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: no schema for {obj['apiVersion']} {obj['kind']} in Kubernetes "
                          f"{version}: vendor one in tests/deploy/schemas/")
    return errors


def test_the_base_and_the_overlays_are_the_ones_documented() -> None:
    assert set(KUSTOMIZATIONS) == {"base", "gpu", "try-it"}
    guide = (ROOT / "docs" / "KUBERNETES.md").read_text()
    for path in KUSTOMIZATIONS.values():
        assert str(path.relative_to(ROOT)) in guide, path
    assert "docs/KUBERNETES.md" in (ROOT / "README.md").read_text()
    assert "KUBERNETES.md" in (ROOT / "docs" / "OPERATIONS.md").read_text()


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_renders_and_validates_against_the_kubernetes_schemas(name: str) -> None:
    rendered = render(name)
    kinds = {obj["kind"] for obj in rendered}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret",
            "ConfigMap"} <= kinds, kinds
    errors = [error for obj in rendered for error in schema_errors(obj)]
    assert errors == []
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in rendered]
    assert len(names) == len(set(names)), "an object rendered twice"


def test_the_validation_can_fail() -> None:
    """The checks above reject a misspelt field, a wrong type and a broken ServiceMonitor."""
    deployment = copy.deepcopy(api("base"))
    container(deployment, "api")["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 8000}}
    assert schema_errors(deployment) and "readinesProbe" in schema_errors(deployment)[0]
    deployment = copy.deepcopy(api("base"))
    deployment["spec"]["replicas"] = "two"
    assert schema_errors(deployment)
    monitor = copy.deepcopy(one("base", "ServiceMonitor", "mnemo-learner"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert schema_errors(monitor)
    monitor = copy.deepcopy(one("base", "ServiceMonitor", "mnemo-learner"))
    del monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["key"]
    assert schema_errors(monitor)
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    assert schema_errors(unknown)


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_every_file_beside_a_kustomization_is_used(name: str) -> None:
    folder = KUSTOMIZATIONS[name]
    text = (folder / "kustomization.yaml").read_text()
    for path in folder.iterdir():
        if path.name != "kustomization.yaml":
            assert re.search(rf"(^|[\s\[/]){re.escape(path.name)}($|[\s,\]])", text, re.M), path


# ---- the API and the learners ---------------------------------------------------------------

@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_the_api_is_probed_on_its_routes_and_scaled_by_cpu(name: str) -> None:
    deployment = api(name)
    c = container(deployment, "api")
    assert c["command"] == services()["api"]["command"] == ["python", "-m", "service", "serve"]
    assert c["ports"] == [{"name": "http", "containerPort": DEFAULTS.port}]
    probes = {kind: (c[kind]["httpGet"]["path"], c[kind]["httpGet"]["port"])
              for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes == {"readinessProbe": ("/readyz", "http"), "livenessProbe": ("/healthz", "http"),
                      "startupProbe": ("/healthz", "http")}
    assert all(is_route(path) for path, _ in probes.values())
    # The autoscaler owns the replica count; it scales on CPU, relative to the request.
    assert "replicas" not in deployment["spec"]
    assert c["resources"]["requests"]["cpu"]
    (hpa,) = objects(name, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    service = one(name, "Service", "mnemo")
    assert service["spec"]["ports"] == [{"name": "http", "port": DEFAULTS.port, "targetPort": "http"}]


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_two_learners_probed_as_compose_probes_one(name: str) -> None:
    deployment = learner(name)
    assert deployment["spec"]["replicas"] == 2  # the lease makes one a standby
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0  # no third learner
    c = container(deployment, "learner")
    assert c["command"] == services()["learner"]["command"] == ["python", "-m", "service", "learn"]
    assert c["ports"] == [{"name": "metrics", "containerPort": DEFAULTS.learner_metrics_port}]
    # /metrics wants the API token, which only an exec probe can send: compose's own check
    # (run against a real metrics server by test_compose.py).
    health = services()["learner"]["healthcheck"]["test"]
    assert health[:1] == ["CMD"]
    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"] == health[1:], probe
    assert c["readinessProbe"]["tcpSocket"]["port"] == "metrics"


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_services_and_disruption_budgets_select_the_pods(name: str) -> None:
    templates = {w["metadata"]["name"]: w["spec"]["template"] for w in workloads(name)}
    for service in objects(name, "Service"):
        chosen = [w for w, t in templates.items()
                  if selects(service["spec"]["selector"], t["metadata"]["labels"])]
        assert len(chosen) == 1, (service["metadata"]["name"], chosen)
        ports = {p["name"] for c in templates[chosen[0]]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, service
    budgets = {b["metadata"]["name"]: b for b in objects(name, "PodDisruptionBudget")}
    assert set(budgets) == {"mnemo-api", "mnemo-learner"}
    for budget_name, budget in budgets.items():
        chosen = [w for w, t in templates.items()
                  if selects(budget["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])]
        assert chosen == [budget_name]
        assert budget["spec"] == {**budget["spec"], "maxUnavailable": 1}


# ---- security -------------------------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "emptyDir", "secret", "persistentVolumeClaim", "projected",
                      "downwardAPI", "csi", "ephemeral"}


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_every_pod_is_non_root_read_only_without_capabilities(name: str) -> None:
    """Pod Security "restricted", and more: read-only root filesystems, no service links, no
    API token mounted, requests and a memory limit for every container."""
    for workload in workloads(name):
        where = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, where
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["enableServiceLinks"] is False, where
        assert pod["automountServiceAccountToken"] is False, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), where
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, (where, volume)
        for c in pod["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}, (where, c["name"])
            assert all("hostPort" not in p for p in c.get("ports", [])), where
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert kubernetes_bytes(resources["limits"]["memory"]) >= kubernetes_bytes(
                resources["requests"]["memory"]), where


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_mnemo_writes_only_to_an_empty_dir(name: str) -> None:
    """The learner writes to /tmp (Python's tempfile, torch); HOME points there too. Every
    other mount is read-only; the API and the learner write nothing else (MNEMO_DATA_DIR is the
    embedded server's, which `serve` and `learn` never start)."""
    seen = set()
    for workload, c in mnemo_containers(name):
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], workload["metadata"]["name"]
        assert {"name": "HOME", "value": "/tmp"} in c["env"]
        for path, mount in mounts.items():
            assert path == "/tmp" or mount.get("readOnly") is True, path
        seen.add(c["name"])
    assert seen == {"api", "learner"}


# ---- settings -------------------------------------------------------------------------------

def environment(name: str, c: dict[str, Any]) -> dict[str, str]:
    """A container's environment as Kubernetes assembles it: envFrom, then env."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(data(one(name, "ConfigMap", source["configMapRef"]["name"])))
        else:
            env.update(data(one(name, "Secret", source["secretRef"]["name"])))
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_every_setting_is_known_and_the_environment_loads(name: str, tmp_path: Path) -> None:
    """Every MNEMO_* name a container gets is a setting, and the settings load, the models file
    (from its ConfigMap, where the pods mount it) included: what start-up would refuse fails
    here."""
    known = known_env_names()
    for workload, c in mnemo_containers(name):
        env = environment(name, c)
        names = {n for n in env if n.startswith("MNEMO_")}
        assert names - known == set(), names - known
        assert {"MNEMO_API_TOKEN", "MNEMO_ADMIN_TOKEN", "MNEMO_REDIS_URL", "MNEMO_MODELS"} <= names
        assert env["MNEMO_HOST"] == "0.0.0.0"
        # The models file, where the pod mounts its ConfigMap.
        pod = workload["spec"]["template"]["spec"]
        mount = next(m for m in c["volumeMounts"] if env["MNEMO_MODELS"].startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        files = data(one(name, "ConfigMap", volume["configMap"]["name"]))
        models_file = tmp_path / Path(env["MNEMO_MODELS"]).relative_to(mount["mountPath"])
        models_file.write_text(files[models_file.name])
        settings = load_settings({**env, "MNEMO_MODELS": str(models_file)})
        models = load_models(settings)
        assert [m.model_name for m in models] == ["default", "sensors"]
        assert len({m.input_dim for m in models}) == 2 and {m.label_type for m in models} == {"str", "int"}
    configs = [obj for obj in objects(name, "ConfigMap") if obj["metadata"]["name"].startswith("mnemo-config")]
    assert len(configs) == 1 and all(key.startswith("MNEMO_") for key in data(configs[0]))


def test_the_tokens_are_placeholders_that_say_so() -> None:
    tokens = data(named("base", "Secret", "mnemo-tokens"))
    assert set(tokens) == {"MNEMO_API_TOKEN", "MNEMO_ADMIN_TOKEN"}
    assert all(value.startswith("replace-me") for value in tokens.values())
    assert tokens["MNEMO_API_TOKEN"] != tokens["MNEMO_ADMIN_TOKEN"]


# ---- the GPU overlay and the images ---------------------------------------------------------

def test_the_gpu_overlay_gives_the_learner_a_gpu_and_the_cuda_image() -> None:
    c = container(learner("gpu"), "learner")
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert str(c["resources"]["requests"]["nvidia.com/gpu"]) == "1"
    assert {"name": "MNEMO_DEVICE", "value": "cuda"} in c["env"]
    assert c["image"] == services()["learner-gpu"]["image"] == "mnemo:cuda"
    tolerations = learner("gpu")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    # Only the learner: the API is the base's, CPU image and all; the base asks for no GPU.
    assert api("gpu") == api("base")
    assert "nvidia.com/gpu" not in json.dumps(learner("base"))
    assert learner("gpu")["spec"]["replicas"] == 2


def test_the_images_are_the_ones_the_dockerfile_and_compose_build() -> None:
    for name in KUSTOMIZATIONS:
        assert container(api(name), "api")["image"] == services()["api"]["image"] == "mnemo:latest"
    # compose's CUDA learner is built with the TORCH_VARIANT the Dockerfile documents for it.
    variant = re.fullmatch(r"\$\{TORCH_VARIANT_GPU:-(cu\d+)\}",
                           services()["learner-gpu"]["build"]["args"]["TORCH_VARIANT"])
    assert variant, services()["learner-gpu"]["build"]
    assert (f"docker build -t mnemo:cuda --build-arg TORCH_VARIANT={variant.group(1)} ."
            in (ROOT / "Dockerfile").read_text())
    assert f"TORCH_VARIANT={variant.group(1)}" in (K8S / "overlays" / "gpu" / "kustomization.yaml").read_text()


# ---- monitoring -----------------------------------------------------------------------------

def alert_jobs() -> set[str]:
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    return set(re.findall(r'job="([a-z]+)"', text))


def test_the_service_monitors_find_the_services_under_the_alerts_job_names() -> None:
    secret = named("base", "Secret", "mnemo-tokens")
    monitors = {m["metadata"]["name"]: m for m in objects("base", "ServiceMonitor")}
    assert set(monitors) == {"mnemo-api", "mnemo-learner"}
    jobs = set()
    for monitor in monitors.values():
        spec = monitor["spec"]
        (service,) = [s for s in objects("base", "Service")
                      if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        jobs.add(service["metadata"]["labels"][spec["jobLabel"]])
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        if service["metadata"]["name"] == "mnemo-learner":
            # Its /metrics names tags: the API token, from the rendered (hashed) Secret.
            assert endpoint["authorization"] == {
                "type": "Bearer",
                "credentials": {"name": secret["metadata"]["name"], "key": "MNEMO_API_TOKEN"}}
        else:
            assert "authorization" not in endpoint  # the API's /metrics is open
    assert jobs == {"api", "learner"} and alert_jobs() <= jobs


def test_the_dashboards_configmap_holds_every_dashboard_for_the_sidecar() -> None:
    dashboards = one("base", "ConfigMap", "mnemo-grafana-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert len(DASHBOARDS) == 3
    assert data(dashboards) == {path.name: path.read_text() for path in DASHBOARDS}
    assert len(json.dumps(dashboards)) < LAST_APPLIED_LIMIT  # `kubectl apply` can store it
    # The dashboards name their datasource by uid; the datasource ConfigMap provides it.
    datasource = one("base", "ConfigMap", "mnemo-grafana-datasource")
    assert datasource["metadata"]["labels"]["grafana_datasource"] == "1"
    (provided,) = yaml.safe_load(data(datasource)["grafana-datasource.yaml"])["datasources"]
    used = set(re.findall(r'"uid":\s*"([^"]+)"', "".join(data(dashboards).values())))
    panel_datasources = {uid for uid in used if uid.endswith("prometheus")}
    assert panel_datasources == {provided["uid"]}
    assert provided["type"] == "prometheus" and provided["isDefault"] is False


# ---- the try-it overlay's Redis ------------------------------------------------------------

def test_the_try_it_overlay_runs_a_redis_sized_for_its_models(tmp_path: Path) -> None:
    assert objects("try-it", "ServiceMonitor") == []  # a bare cluster has no such CRD
    (namespace,) = objects("try-it", "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {obj["metadata"].get("namespace") for obj in render("try-it") if obj["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]}
    redis = one("try-it", "StatefulSet", "redis")
    c = container(redis, "redis")
    command = c["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = redis_bytes(command[command.index("--maxmemory") + 1])
    assert kubernetes_bytes(c["resources"]["limits"]["memory"]) >= LIMIT_OVER_MAXMEMORY * maxmemory
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (mount,) = c["volumeMounts"]
    assert (mount["name"], mount["mountPath"]) == (claim["metadata"]["name"],
                                                   command[command.index("--dir") + 1])
    # The service the pods' MNEMO_REDIS_URL names is this Redis.
    _, api_container = next(mnemo_containers("try-it"))
    env = environment("try-it", api_container)
    url = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", env["MNEMO_REDIS_URL"])
    assert url, env["MNEMO_REDIS_URL"]
    service = one("try-it", "Service", url.group(1))
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in service["spec"]["ports"]] == [int(url.group(2))]
    assert redis["spec"]["serviceName"] == service["metadata"]["name"]
    # Sized from the retention figures: what the settings bound, for every model, plus room
    # for a useful label rate's dedupe ids.
    models_file = tmp_path / "models.yaml"
    models_file.write_text(data(named("try-it", "ConfigMap", "mnemo-models"))["models.yaml"])
    models = load_models(load_settings({**env, "MNEMO_MODELS": str(models_file)}))
    assert sustained_labels_per_second(maxmemory, models) >= 100
