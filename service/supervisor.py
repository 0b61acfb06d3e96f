"""Keep one learner child process alive beside the API in `run`: restart it when it dies
(with backoff), stop it with SIGTERM so it finishes its step."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
HEALTHY_SECONDS = 30.0  # a learner that ran this long died of something new: restart quickly


class LearnerSupervisor:
    def __init__(self, env: Mapping[str, str], stop_timeout: float = 20.0) -> None:
        self._env = dict(env)
        self._stop_timeout = stop_timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no spawn may slip in after stop() looked
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="learner-supervisor", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "service", "learn"], env=self._env)

    def _watch(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = process = self._spawn()
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_SECONDS:
                backoff = FIRST_BACKOFF  # back off on crash loops, not on every crash ever
            self.restarts += 1
            log.warning("learner exited with %s; restarting in %.1fs", code, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread.is_alive():
            self._thread.join(self._stop_timeout)
