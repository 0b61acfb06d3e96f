"""The process entry (`python -m service`, `mnemo`): what must be decided before numpy loads.

Every Mnemo process computes on one thread (an API process per core, the learner on its own;
torch is set to one thread where they start). numpy's OpenBLAS reads its thread count once, at
import, and its idle threads spin: in the learner, the drift calibration's matrix products kept
both cores busy for seconds (8.4 CPU-seconds in a 10 s run), which took the API's p99 at half
capacity from ~7 to ~48 ms on 2 cores. An operator's own setting of these variables wins.
"""

from __future__ import annotations

import os

ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_compute_threads() -> None:
    for name in ONE_THREAD:
        os.environ.setdefault(name, "1")


def main() -> int:
    limit_compute_threads()
    from service.cli import main as cli_main  # numpy and torch load here, after the limit

    return cli_main()
