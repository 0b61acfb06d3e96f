"""Real Mnemo processes for end-to-end tests: started in their own process groups, logged to
files, always stopped (SIGTERM, then SIGKILL to the whole group and to every descendant seen),
and polled with deadlines."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def base_env(**mnemo: object) -> dict[str, str]:
    """The test runner's environment without any MNEMO_* name (the service refuses unknown
    ones, e.g. MNEMO_TEST_REDIS_URL), plus the given settings as MNEMO_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update({f"MNEMO_{k.upper()}": str(v) for k, v in mnemo.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    out, todo = [], children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    seen: dict[int, list[str]] = field(default_factory=dict)  # descendants ever seen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def remember_descendants(self) -> list[int]:
        pids = descendants(self.pid)
        for pid in pids:
            self.seen.setdefault(pid, cmdline(pid))
        return pids

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_bytes().decode(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()}) ---\n" + "\n".join(text)


class Procs:
    """Starts `python -m service …` processes; stop_all() (a finalizer) ends every one."""

    def __init__(self, log_dir: Path) -> None:
        self._dir = log_dir
        self._procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        log_path = self._dir / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "service", *args], env=dict(env), cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one signal reaches its children
        )
        proc = Proc(name, popen, log_path, log)
        self._procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self._procs)

    def stop_all(self, graceful: bool = True) -> None:
        """SIGTERM (graceful: drain, stop the learner; up to 20 s), then SIGKILL to each process
        group and every descendant seen. graceful=False goes straight to SIGKILL: a test's
        teardown, where nothing checks how the processes end (a graceful stop takes 0.5-2 s)."""
        for proc in self._procs:
            proc.remember_descendants()
        for proc in reversed(self._procs):
            if graceful and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            if graceful:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(20)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait()
            for pid, command in proc.seen.items():  # e.g. an embedded server in its own session
                if command and cmdline(pid) == command:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            proc.log.close()


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             diagnose: Callable[[], str] = lambda: "", interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.TransportError, OSError) as exc:  # not up yet / restarting
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                                 f"(last: {last!r})\n{diagnose()}")
        time.sleep(interval)


def read_csv(path: Path) -> tuple[list[list[float]], list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[float(v) for v in row[:-1]] for row in rows], [row[-1] for row in rows]


def split_csv(path: Path, parts: int) -> list[Path]:
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    out = []
    for i in range(parts):
        part = path.with_name(f"{path.stem}-part{i}.csv")
        with part.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows[i * len(rows) // parts : (i + 1) * len(rows) // parts])
        out.append(part)
    return out
