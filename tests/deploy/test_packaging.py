"""A non-editable install (the Docker image's `pip install --no-deps .`) carries what the
package reads at run time: the live page's files and the Lua scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.e2e.procs import ROOT


def test_the_wheel_ships_the_page_and_the_lua_scripts(tmp_path: Path) -> None:
    # What the Dockerfile copies, built outside the worktree (setuptools writes build/ there).
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("models", "service", "mnemo_client"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("mnemo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        assert f"service/api/static/{name}" in names, name
    assert any(n.startswith("service/store/lua/") and n.endswith(".lua") for n in names)
    assert "service/report.py" in names and not any(n.startswith("tests/") for n in names)
    assert "mnemo_client/__init__.py" in names  # the Python client ships with the server
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text and "Classifier: Framework :: FastAPI" in text


def test_mnemo_version_is_the_package_version() -> None:
    from service.version import package_version

    done = subprocess.run([sys.executable, "-m", "service", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == f"mnemo {package_version()}"
    assert package_version() != "0+unknown"  # the test run's install knows its version

