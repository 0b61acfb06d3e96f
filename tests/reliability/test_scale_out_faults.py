"""Scale-out under faults: two API processes and two learners on one Redis under load. One
API process and the lease-holding learner are SIGKILLed together: the other API process keeps
answering every request (no error of any kind), the standby learner takes over and
publishes, and every accepted item is counted exactly once."""

from __future__ import annotations

import os
import signal

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


def test_one_api_and_the_lease_holder_killed_under_load(
    procs: Procs, model_name: str, redis_client: redis.Redis
) -> None:
    cluster = Cluster(procs, REDIS_URL, model_name)
    victim, survivor = cluster.serve(), cluster.serve()
    learners = [cluster.learn(), cluster.learn()]
    # One client spreads over both APIs (and loses its in-flight request to the victim); the
    # other talks only to the survivor, which must never fail it.
    spread = Feeder([victim.url, survivor.url], "spread").start()
    steady = Feeder([survivor.url], "steady", seed=1).start()
    api = httpx.Client(base_url=survivor.url, timeout=10)
    try:
        holder, standby = cluster.holder_and_standby(learners, redis_client)
        os.kill(victim.proc.pid, signal.SIGKILL)
        os.kill(holder.proc.pid, signal.SIGKILL)
        victim.proc.popen.wait(10)
        holder.proc.popen.wait(10)
        spread.drop(victim.url)
        sent = len(steady.accepted)
        wait_for(lambda: standby.metric("mnemo_model_publish_total", outcome="published") >= 2,
                 60, "the standby to publish", procs.logs)
        wait_for(lambda: len(steady.accepted) > sent + 200, 60, "the survivor to keep accepting")
        current = api.get("/v1/versions/current").json()["version"]
        wait_for(lambda: api.post("/v1/predict", json={"inputs": [[0.0] * 8]})
                 .json()["model_version"] >= current, 30, "the survivor to follow the standby")
    finally:
        spread.stop()
        steady.stop()
    assert steady.transport_errors == {} and set(steady.statuses) == {(survivor.url, 202)}
    assert spread.statuses[(survivor.url, 202)] > 0
    assert {status for (_, status) in spread.statuses} == {202}
    assert set(spread.transport_errors) <= {victim.url}
    accepted = spread.accepted + steady.accepted
    assert len(accepted) == len(set(accepted))
    assert set(accepted) <= seen_ids(redis_client, model_name)
    # Items the victim stored but could not answer are counted too: they were accepted.
    total = accepted_counter(redis_client, model_name)
    assert total - len(accepted) <= spread.batch
    wait_caught_up(api, total, procs)
    check_version_history(api)
    api.close()
