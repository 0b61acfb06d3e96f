from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Processes started through it are stopped at teardown, also when the test failed."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
