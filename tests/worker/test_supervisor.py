"""LearnerSupervisor (the `run` command's learner keeper) with a stand-in child that exits at
once: it is restarted with a backoff that doubles on a crash loop and starts over after a
child that ran long enough; stop() ends the watch."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

from service import supervisor as supervisor_module
from service.supervisor import LearnerSupervisor


class QuickExit(LearnerSupervisor):
    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])


def _delays(caplog: pytest.LogCaptureFixture, healthy_seconds: float,
            monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(supervisor_module, "FIRST_BACKOFF", 0.1)
    monkeypatch.setattr(supervisor_module, "HEALTHY_SECONDS", healthy_seconds)
    caplog.clear()
    keeper = QuickExit({})
    with caplog.at_level(logging.WARNING, logger="service.supervisor"):
        keeper.start()
        deadline = time.monotonic() + 30
        try:
            while keeper.restarts < 4:
                assert time.monotonic() < deadline, f"only {keeper.restarts} restarts"
                time.sleep(0.02)
        finally:
            keeper.stop()
    assert not keeper._thread.is_alive()
    messages = [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()]
    assert all(m.startswith("learner exited with 3;") for m in messages), messages
    return [m.rsplit(" ", 1)[1] for m in messages[:4]]


def test_backoff_doubles_on_a_crash_loop(caplog: pytest.LogCaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _delays(caplog, 3600.0, monkeypatch) == ["0.1s", "0.2s", "0.4s", "0.8s"]


def test_backoff_starts_over_after_a_child_that_ran_long_enough(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _delays(caplog, 0.0, monkeypatch) == ["0.1s"] * 4
