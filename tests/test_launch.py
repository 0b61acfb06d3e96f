"""Mnemo's processes compute on one thread: numpy's BLAS is limited before numpy loads (its
idle threads spin and took the API's latency tail with them), unless the operator chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.e2e.procs import ROOT

PROBE = ("from service.launch import limit_compute_threads; limit_compute_threads(); "
         "import numpy, threadpoolctl, json; "
         "print(json.dumps({i['internal_api']: i['num_threads'] "
         "for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'}))")


def _blas_threads(env: dict[str, str]) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_blas_gets_one_thread_unless_the_operator_set_it() -> None:
    bare = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    limited = _blas_threads(bare)
    assert limited and set(limited.values()) == {1}, limited
    chosen = _blas_threads({**bare, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    assert set(chosen.values()) == {2}, chosen


def test_the_module_entry_goes_through_the_launcher() -> None:
    done = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    assert "serve" in done.stdout and "learn" in done.stdout


def _niceness_after(lower_to: int, started_at: int) -> int:
    probe = ("import os; from service.worker.process import lower_priority; "
             f"lower_priority({lower_to}); print(os.nice(0))")
    done = subprocess.run(["nice", "-n", str(started_at), sys.executable, "-c", probe],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return int(done.stdout)


def test_the_learner_lowers_its_priority_but_never_raises_it() -> None:
    assert _niceness_after(10, 0) == 10  # background work: the API's requests come first
    assert _niceness_after(10, 15) == 15  # an operator's lower priority stays
