"""Structured logs of a real `python -m service serve` process: one JSON object per line with
ts/level/role/logger/request_id/message, one request line per request carrying the same
request id as the response's X-Request-ID, and MNEMO_LOG_LEVEL filtering."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REDIS_URL, free_port

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"ts", "level", "role", "logger", "request_id", "message"}
ROW = [5.1, 3.5, 1.4, 0.2]


def _serve_and_call(model_name: str, level: str, log_path: Path) -> tuple[list[httpx.Response], list[str]]:
    """Start a serve process, make four requests (200, 200, 422, 404), stop it with SIGTERM;
    returns the responses and every line it wrote (stdout and stderr)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update({
        "MNEMO_REDIS_URL": REDIS_URL, "MNEMO_MODEL_NAME": model_name, "MNEMO_PORT": str(port),
        "MNEMO_LOG_LEVEL": level, "MNEMO_INPUT_DIM": "4", "MNEMO_LABELS": "a,b,c",
    })
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready\n" + log_path.read_text()
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            responses = [
                client.get("/healthz", headers={"X-Request-ID": "client-chosen-1"}),
                client.post("/v1/predict", json={"inputs": [ROW]}),
                client.post("/v1/predict", json={"inputs": [[1.0]]}),
                client.get("/v1/versions/99"),
            ]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log_path.read_text()
    return responses, [line for line in log_path.read_text().splitlines() if line.strip()]


def _parse(lines: list[str], role: str) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert set(entry) >= FIELDS, line
        assert entry["role"] == role
        assert entry["ts"].endswith("Z") and "T" in entry["ts"]
        entries.append(entry)
    return entries


def test_debug_writes_json_lines_and_one_request_line_per_request(
    model_name: str, tmp_path: Path
) -> None:
    responses, lines = _serve_and_call(model_name, "DEBUG", tmp_path / "serve.log")
    assert [r.status_code for r in responses] == [200, 200, 422, 404]
    entries = _parse(lines, "serve")
    assert responses[0].headers["x-request-id"] == "client-chosen-1"
    expected = [("GET", "/healthz", 200, "DEBUG"), ("POST", "/v1/predict", 200, "DEBUG"),
                ("POST", "/v1/predict", 422, "INFO"), ("GET", "/v1/versions/99", 404, "INFO")]
    request_lines = [e for e in entries if e["logger"] == "service.access"]
    # /readyz polls while waiting for start-up log too; the four requests log exactly once each.
    assert all(e["message"] == "request" for e in request_lines)
    assert {e["route"] for e in request_lines} - {"/readyz"} == {"/healthz", "/v1/predict", "/v1/versions/99"}
    for response, (method, route, status, level) in zip(responses, expected, strict=True):
        request_id = response.headers["x-request-id"]
        assert request_id
        mine = [e for e in entries if e["request_id"] == request_id]
        assert len(mine) == 1, (request_id, mine)
        line = mine[0]
        assert (line["logger"], line["method"], line["route"], line["status"], line["level"]) == (
            "service.access", method, route, status, level)
        assert isinstance(line["latency_ms"], int | float) and 0 <= line["latency_ms"] < 10_000
    assert len({r.headers["x-request-id"] for r in responses}) == 4  # server-made ids are unique
    # Lines outside any request carry the placeholder id; start-up logs at INFO.
    outside = [e for e in entries if e["logger"] != "service.access"]
    assert outside and all(e["request_id"] == "-" for e in outside)
    assert any(e["level"] == "INFO" and "serving version 0" in e["message"] for e in outside)


def test_warning_level_suppresses_info_and_debug(model_name: str, tmp_path: Path) -> None:
    responses, lines = _serve_and_call(model_name, "WARNING", tmp_path / "serve.log")
    # The same requests as above, whose lines were DEBUG and INFO there (and start-up INFO).
    assert [r.status_code for r in responses] == [200, 200, 422, 404]
    entries = _parse(lines, "serve")
    assert [e for e in entries if e["level"] in ("DEBUG", "INFO")] == []
    assert not any(e["logger"] == "service.access" for e in entries)


def test_uncaught_exceptions_and_warnings_are_json_lines_too() -> None:
    """A process that dies (or a thread that does) leaves its traceback as a JSON line, not
    Python's plain text on stderr."""
    code = (
        "import threading, warnings\n"
        "from service.logs import configure_logging\n"
        "configure_logging('INFO', 'learn')\n"
        "warnings.warn('a warning')\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
        "raise ValueError('boom')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    entries = _parse((done.stdout + done.stderr).splitlines(), "learn")
    assert [(e["level"], e["message"]) for e in entries] == [
        ("WARNING", entries[0]["message"]),
        ("ERROR", "uncaught exception in thread worker"),
        ("CRITICAL", "uncaught exception, exiting"),
    ]
    assert "a warning" in entries[0]["message"]
    assert "ZeroDivisionError" in entries[1]["exception"]
    assert "ValueError: boom" in entries[2]["exception"]


def _lines_on(log_format: str, terminal: bool) -> list[str]:
    """What a process logging one line with an extra field and one exception writes, with
    stderr on a terminal (a pseudo-terminal) or a pipe."""
    code = (
        "import logging, sys\n"
        "from service.logs import configure_logging\n"
        f"configure_logging('INFO', 'serve', {log_format!r})\n"
        "log = logging.getLogger('service.x')\n"
        "log.info('published', extra={'version': 3})\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n"
    )
    if not terminal:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        return done.stderr.splitlines()
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=follower, timeout=60)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    return out.decode().replace("\r\n", "\n").splitlines()


def test_plain_lines_on_a_terminal_json_elsewhere_or_as_set() -> None:
    plain = _lines_on("auto", terminal=True)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO    serve service\.x: published version=3",
                        plain[0]), plain
    assert plain[1].endswith("ERROR   serve service.x: failed")
    assert plain[2] == "Traceback (most recent call last):" and "ZeroDivisionError" in plain[-1]
    piped = _parse(_lines_on("auto", terminal=False), "serve")
    assert [(e["message"], e.get("version")) for e in piped] == [("published", 3), ("failed", None)]
    assert "ZeroDivisionError" in piped[1]["exception"]
    assert _lines_on("plain", terminal=False)[0].endswith("published version=3")
    assert json.loads(_lines_on("json", terminal=True)[0])["version"] == 3
