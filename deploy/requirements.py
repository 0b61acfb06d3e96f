"""Print Mnemo's pip requirements from pyproject.toml, one a line: the dependencies plus the
extras named on the command line. The Dockerfile installs them before it copies the source (a
dependency layer that source changes do not rebuild); tests/deploy runs the same command.

    python requirements.py pyproject.toml report > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}: pyproject.toml has {sorted(optional)}")
    return [*project["dependencies"], *(req for name in extras for req in optional[name])]


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
