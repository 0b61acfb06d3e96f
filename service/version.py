"""The installed package's version (one place: /v2 metadata, `mnemo --version`, the
mnemo_build_info metric)."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """pyproject's version as installed; "0+unknown" when run from a tree never installed."""
    try:
        return metadata.version("mnemo")
    except metadata.PackageNotFoundError:
        return "0+unknown"
