"""The README's quickstart on a fresh clone: `make run` answers the README's curl examples, and
SIGTERM to its process group stops everything (API, learner, embedded Valkey)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
START = "<!-- quickstart-curl"
END = "<!-- /quickstart-curl -->"


def readme_commands(readme: str) -> list[str]:
    """The shell commands between the quickstart markers: fences, comments and blank lines
    dropped, backslash continuations joined."""
    assert START in readme and END in readme, "README lost its quickstart-curl markers"
    block = readme.split(START, 1)[1].split(END, 1)[0]
    block = block.split("\n", 1)[1]  # the rest of the marker's own line
    block = block.replace("\\\n", " ")
    return [line.strip() for line in block.splitlines()
            if line.strip() and not line.strip().startswith(("#", "```"))]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_answers_the_readme_examples(tmp_path: Path) -> None:
    assert shutil.which("git") and shutil.which("make") and shutil.which("curl")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--local", str(ROOT), str(clone)], check=True, timeout=60)
    python = VENV / "bin" / "python"
    # `python -m service` in the clone must import the clone's code, not the editable install's:
    # the working directory comes first on sys.path.
    imported = subprocess.run([str(python), "-c", "import service, models; print(service.__file__, models.__file__)"],
                              cwd=clone, capture_output=True, text=True, check=True, timeout=60)
    assert imported.stdout.split() == [str(clone / "service" / "__init__.py"), str(clone / "models" / "__init__.py")]

    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MNEMO_") and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(MNEMO_PORT=str(port), MNEMO_DATA_DIR=str(data))
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        # The existing venv instead of a fresh install: VENV points make at it and -o keeps
        # make from rebuilding its install stamp.
        proc = subprocess.Popen(
            ["make", "-C", str(clone), "run", f"VENV={VENV}", "-o", f"{VENV}/.installed-stamp"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"make run exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"not ready:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)

        commands = readme_commands((clone / "README.md").read_text())
        assert len(commands) == 4, commands
        assert all(c.startswith("curl ") and "127.0.0.1:8000/" in c for c in commands), commands
        answers = []
        for command in commands:
            run = subprocess.run(["bash", "-c", command.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/")],
                                 capture_output=True, text=True, timeout=30, check=False)
            assert run.returncode == 0, (command, run.stderr)
            answers.append(json.loads(run.stdout))
        predict, feedback, stats, versions = answers

        assert predict["model_version"] == 0
        assert predict["labels"] == ["setosa", "versicolor", "virginica"]
        assert predict["logged"] is True
        assert [p["id"] for p in predict["predictions"]] == ["req-1", "req-2"]
        for p in predict["predictions"]:
            assert len(p["probabilities"]) == 3 and abs(sum(p["probabilities"]) - 1) < 1e-5
            assert p["label"] in predict["labels"]
        assert feedback == {"accepted": 2, "duplicates": 0}
        assert {"model_version", "samples_seen", "feedback_lag", "drift"} <= set(stats)
        # The learner runs beside the API: whatever it has processed is no longer lag.
        assert stats["samples_seen"] + stats["feedback_lag"] == 2
        assert isinstance(versions["current"], int)
        assert versions["versions"][-1]["version"] == 0
        assert versions["versions"][-1]["labels"] == ["setosa", "versicolor", "virginica"]

        valkey_conf = (data / "redis" / "valkey.conf").read_text()
        valkey_port = int(re.search(r"^port (\d+)$", valkey_conf, re.MULTILINE).group(1))  # type: ignore[union-attr]
        assert _listening(valkey_port)

        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None or _group_alive(pgid) or _listening(valkey_port):
            assert time.monotonic() < deadline, f"still running 20 s after SIGTERM:\n{log_path.read_text()}"
            time.sleep(0.1)
        assert not _listening(port)
        log_text = log_path.read_text()
        assert "Traceback" not in log_text, log_text
        assert "Application shutdown complete" in log_text
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
