"""`python -m service run` end to end: the digits stream replayed through the API while the
learner is SIGKILLed three times; it resumes from the current version every time, counts every
accepted item exactly once, and the result classifies held-out digits.

The stream is replayed in four parts: the first one teaches a first version (so a learner that
restarted from version 0 instead of resuming could not pass for one that resumed), and the
learner is killed a hundred items into each of the other three."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.data_digits import write_digits_csv
from tests.e2e.procs import ROOT, Proc, Procs, base_env, cmdline, read_csv, split_csv, wait_for

KILLS = 3
KILL_AFTER_ITEMS = 100  # into each part of the stream



def newest_of(by_version: dict) -> dict:
    """The newest version of one listing (two listings could differ by a publish between)."""
    return by_version[max(by_version)]

def learner_pid(run: Proc) -> int | None:
    """The `service learn` child of the run process (the supervisor's current learner)."""
    for pid in run.remember_descendants():
        if cmdline(pid)[-2:] == ["service", "learn"]:
            return pid
    return None


def accepted(api: httpx.Client) -> int:
    stats = api.get("/v1/stats").raise_for_status().json()
    return int(stats["samples_seen"]) + int(stats["feedback_lag"])


def versions(api: httpx.Client) -> dict[int, dict[str, Any]]:
    body = api.get("/v1/versions", params={"limit": 1000}).raise_for_status().json()
    assert body["next"] is None
    return {v["version"]: v for v in body["versions"]}


def ancestors(api: httpx.Client, version: int) -> list[int]:
    """`version`'s parent chain, walked through GET /v1/versions/{v}, down to version 0."""
    chain = []
    parent = api.get(f"/v1/versions/{version}").raise_for_status().json()["parent"]
    while parent is not None:
        chain.append(parent)
        parent = api.get(f"/v1/versions/{parent}").raise_for_status().json()["parent"]
    return chain


def test_run_learns_digits_and_resumes_after_sigkills(tmp_path: Path, procs: Procs) -> None:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    assert write_digits_csv(train, split="train") == 1437
    assert write_digits_csv(test, split="test") == 360
    port = free_port()
    env = base_env(data_dir=tmp_path / "data", port=port, input_dim=64, publish_every_seconds=1,
                   lease_ttl_seconds=2)  # a killed learner's lease lapses in 2 s, not 10
    run = procs.start("run", ["run"], env)
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=url, timeout=10)
    try:
        wait_for(lambda: api.get("/readyz").status_code == 200, 60, "the API to be ready", procs.logs)
        learners = [wait_for(lambda: learner_pid(run), 30, "the learner", procs.logs)]
        total = 0
        for number, part in enumerate(split_csv(train, KILLS + 1)):
            replay = subprocess.Popen(
                [sys.executable, "-m", "service", "replay", str(part), "--label-column", "y",
                 "--url", url, "--batch-size", "16", "--json", "--quiet"],
                cwd=ROOT, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            try:
                if number == 0:
                    out, err = replay.communicate(timeout=120)
                    report = json.loads(out)
                    assert report["errors"] == {}, report
                    total += report["accepted"]
                    wait_for(lambda: newest_of(versions(api))["samples_seen"] == total,  # noqa: B023
                             30, "the first part to be committed", procs.logs)
                    continue
                # Mid-stream: once the API has accepted the first items of this part.
                wait_for(lambda: replay.poll() is not None or accepted(api) >= total + KILL_AFTER_ITEMS,  # noqa: B023
                         30, "the replay to get going", procs.logs, interval=0.01)
                current = api.get("/v1/versions/current").raise_for_status().json()["version"]
                assert current > 0
                newest = max(versions(api))
                os.kill(learners[-1], signal.SIGKILL)
                out, err = replay.communicate(timeout=120)
            finally:
                if replay.poll() is None:
                    replay.kill()
                    replay.wait()
            assert replay.returncode == 0, err.decode()
            report = json.loads(out)
            assert report["errors"] == {}, report  # no 5xx (nor anything else) while it restarted
            assert report["accepted"] == report["rows"] and report["duplicates"] == 0
            total += report["accepted"]

            # The supervisor restarts the learner; its first version descends from `current`.
            learners.append(wait_for(
                lambda: (pid := learner_pid(run)) not in (None, *learners) and pid,
                30, "a new learner", procs.logs))
            after = wait_for(lambda: sorted(v for v in versions(api) if v > newest),  # noqa: B023
                             60, "a version from the restarted learner", procs.logs)
            for version in after:
                assert current in ancestors(api, version), (version, current, versions(api))
            assert versions(api)[after[0]]["samples_seen"] > versions(api)[current]["samples_seen"]

        assert total == 1437
        # Caught up: every accepted item processed once, and committed in a version.
        wait_for(lambda: (s := api.get("/v1/stats").json())["feedback_lag"] == 0
                 and s["samples_seen"] == total, 60, "the learner to catch up", procs.logs)
        wait_for(lambda: newest_of(versions(api))["samples_seen"] == total, 30,
                 "a version that includes every item", procs.logs)
        stats = api.get("/v1/stats").json()
        assert (stats["samples_seen"], stats["feedback_lag"]) == (total, 0)
        assert stats["reservoir_size"] == 1000  # MNEMO_BUFFER_SIZE: full, not overfilled

        listed = versions(api)
        published = [v for v, meta in listed.items() if v > 0 and meta["status"] != "rejected"]
        assert len(published) >= KILLS + 1, listed  # advanced several times: once per part at least
        current = api.get("/v1/versions/current").json()
        assert current["status"] == "active" and current["version"] == max(published)
        assert sorted(current["labels"]) == [str(d) for d in range(10)]

        x, y = read_csv(test)
        answer = api.post("/v1/predict", json={"inputs": x}).raise_for_status().json()
        assert answer["model_version"] == current["version"]
        correct = sum(p["label"] == label for p, label in zip(answer["predictions"], y, strict=True))
        accuracy = correct / len(y)
        print(f"digits held-out accuracy {accuracy:.4f} with version {current['version']} "
              f"({len(published)} published, learners {learners})")
        assert accuracy >= 0.90, accuracy
        assert run.popen.poll() is None  # `run` itself never went down
        assert len(set(learners)) == KILLS + 1
    finally:
        api.close()
    started = time.monotonic()
    procs.stop_all()  # SIGTERM: drains, stops its learner and its embedded server
    assert run.popen.returncode == 0, procs.logs()
    assert time.monotonic() - started < 20
    # Every descendant goes with it. One being torn down may need a moment to be gone (CI saw
    # one still there right after `run` returned; the embedded server's AOF-rewrite fork is a
    # likely one, unconfirmed): waited for, briefly; one that lives on is a leak and fails.
    wait_for(lambda: all(cmdline(pid) != command for pid, command in run.seen.items()), 5,
             "every process `run` started to be gone",
             lambda: "\n".join(f"{pid}: {command}" for pid, command in run.seen.items()
                               if cmdline(pid) == command))
