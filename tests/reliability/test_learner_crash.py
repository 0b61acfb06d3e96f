"""Learner crash: the learner process is SIGKILLed at six seeded random moments while
feedback streams in and versions publish, and restarted each time (on the same host, so the
restarted learner takes the dead one's lease at once, not after its 30 s TTL). In the end every item
answered 202 is counted exactly once in samples_seen, and the version history has no gap
(a version number allocated but never published) and no item committed twice."""

from __future__ import annotations

import os
import random
import signal
import time

import httpx
import redis

from tests.conftest import REDIS_URL
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import (
    Cluster,
    Feeder,
    accepted_counter,
    check_version_history,
    seen_ids,
    wait_caught_up,
)

KILLS = 6
TTL = 30.0  # far longer than a restart: the dead holder's lease is broken, not waited out


def test_learner_sigkilled_six_times_counts_every_item_once(
    procs: Procs, model_name: str, redis_client: redis.Redis
) -> None:
    cluster = Cluster(procs, REDIS_URL, model_name, lease_ttl_seconds=TTL)
    api_node = cluster.serve()
    learner = cluster.learn()
    rng = random.Random(9)
    feeder = Feeder([api_node.url], "crash").start()
    api = httpx.Client(base_url=api_node.url, timeout=10)
    try:
        killed_at = []
        for _ in range(KILLS):
            # Wait until this learner is working (it took the lease and processed items), then
            # kill it at a random moment: mid-read, mid-training or mid-publish.
            seen = api.get("/v1/stats").json()["samples_seen"]
            wait_for(lambda: api.get("/v1/stats").json()["samples_seen"] > seen,  # noqa: B023
                     60, "the learner to process items", procs.logs)
            time.sleep(rng.uniform(0.0, 1.5))
            os.kill(learner.proc.pid, signal.SIGKILL)
            learner.proc.popen.wait(10)
            killed_at.append(api.get("/v1/stats").json()["samples_seen"])
            learner = cluster.learn()
            wait_for(lambda: cluster.lease_holder(redis_client) == learner.proc.pid,  # noqa: B023
                     TTL / 2, "the restarted learner to take the dead one's lease", procs.logs)
        feeder.stop()
        assert feeder.transport_errors == {} and set(feeder.statuses) == {(api_node.url, 202)}
        total = len(feeder.accepted)
        assert total == len(set(feeder.accepted)) > 0
        wait_caught_up(api, total, procs)
        stats = api.get("/v1/stats").json()
        assert (stats["samples_seen"], stats["feedback_lag"]) == (total, 0)
        assert accepted_counter(redis_client, model_name) == total
        assert seen_ids(redis_client, model_name) == set(feeder.accepted)
        listed = check_version_history(api)
        print(f"{total} items, {len(listed)} versions, kills at samples_seen {killed_at}")
        assert len(listed) > KILLS  # versions kept publishing between the kills
        assert killed_at == sorted(killed_at) and killed_at[-1] < total
    finally:
        feeder.stop()
        api.close()
