from __future__ import annotations

from tests.e2e.conftest import procs  # noqa: F401  (real processes, always stopped)
