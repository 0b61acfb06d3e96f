"""Failover: two learners on one Redis. Only the lease holder reads, trains and publishes;
when it stalls the standby takes the lease within the lease TTL plus 2 seconds and publishes,
the stalled one is fenced out when it wakes, and when the new holder is killed the other takes
over again; no accepted item is lost or counted twice. A learner whose lease was taken over is refused by the fencing
token on every write (buffer insert, stats, version number, publish) and changes nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from service.config import Settings
from service.store.connection import connect
from service.store.keys import Keys
from service.store.scripts import Scripts
from service.worker.fencing import Fenced, fenced, fenced_hset
from service.worker.lease import Lease
from service.worker.loop import LearnerService
from tests.conftest import REDIS_URL, running_app, snapshot
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import (
    FAST,
    Cluster,
    Feeder,
    Node,
    blobs,
    check_version_history,
    items,
    wait_caught_up,
)

TTL = float(FAST["lease_ttl_seconds"])  # type: ignore[arg-type]


def takeover(cluster: Cluster, r: redis.Redis, new: Node, since: float, procs: Procs) -> str:
    """Wait (TTL + 2 s at most) for `new` to hold the lease, then for its first publish;
    returns both delays."""
    published = new.metric("mnemo_model_publish_total", outcome="published")
    wait_for(lambda: cluster.lease_holder(r) == new.proc.pid, TTL + 2,
             "the standby to take the lease within TTL + 2 s", procs.logs, interval=0.02)
    took_over = time.monotonic() - since
    wait_for(lambda: new.metric("mnemo_model_publish_total", outcome="published") > published,
             30, "the standby to publish", procs.logs, interval=0.02)
    return f"lease after {took_over:.2f} s, first publish after {time.monotonic() - since:.2f} s"


def test_standby_takes_over_from_a_stalled_and_then_from_a_killed_holder(
    procs: Procs, model_name: str, redis_client: redis.Redis
) -> None:
    """1. The holder stalls (SIGSTOP): its lease lapses and the standby takes over within
    TTL + 2 s. 2. The stalled one wakes up (SIGCONT): fenced, it writes nothing and becomes
    the standby. 3. The new holder is SIGKILLed: the old one, on the same host, sees its
    process gone and takes over without waiting for the TTL. Nothing is lost throughout."""
    cluster = Cluster(procs, REDIS_URL, model_name)
    api_node = cluster.serve()
    learners = [cluster.learn(), cluster.learn()]
    feeder = Feeder([api_node.url], "failover").start()
    api = httpx.Client(base_url=api_node.url, timeout=10)
    try:
        first, second = cluster.holder_and_standby(learners, redis_client)
        # Only the holder wrote: the standby has read, trained and published nothing.
        assert first.metric("mnemo_learner_samples_total") > 0
        assert second.metric("mnemo_learner_samples_total") == 0
        for outcome in ("published", "rejected", "failed"):
            assert second.metric("mnemo_model_publish_total", outcome=outcome) == 0
        before = max(int(v) for v in redis_client.zrange(Keys(model_name).versions, 0, -1))

        os.kill(first.proc.pid, signal.SIGSTOP)
        try:
            stalled = takeover(cluster, redis_client, second, time.monotonic(), procs)
            assert api.get("/v1/versions/current").json()["version"] > before
        finally:
            os.kill(first.proc.pid, signal.SIGCONT)
        wait_for(lambda: "learner restarting as a standby" in first.proc.log_path.read_text(),
                 30, "the woken holder to notice it was fenced out", procs.logs)
        assert cluster.lease_holder(redis_client) == second.proc.pid

        os.kill(second.proc.pid, signal.SIGKILL)
        second.proc.popen.wait(10)
        killed = takeover(cluster, redis_client, first, time.monotonic(), procs)
        print(f"lease TTL {TTL} s. Holder stalled: {stalled}. Holder killed: {killed}.")
        feeder.stop()
        assert feeder.transport_errors == {} and set(feeder.statuses) == {(api_node.url, 202)}
        wait_caught_up(api, len(feeder.accepted), procs)
        check_version_history(api)
    finally:
        feeder.stop()
        api.close()


async def test_a_learner_whose_lease_was_taken_over_writes_nothing(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    labels = FAST["labels"].split(",")  # type: ignore[union-attr]
    settings = make_settings(input_dim=FAST["input_dim"], labels=labels, publish_every_samples=10_000,
                             publish_first_samples=10_000, max_batch=64)
    keys = Keys(model_name)
    async with running_app(settings) as client:
        aredis = connect(REDIS_URL, 2)
        try:
            stale = LearnerService(settings, aredis)
            assert await stale.lease.try_acquire()
            await stale.prepare()
            x, y = blobs(60, seed=1)
            response = await client.post("/v1/feedback", json={"items": items(x[:40], y[:40], "s")})
            assert response.status_code == 202
            assert await stale.step() == 40
            # Its lease lapses (as after a long GC pause) and another learner takes it.
            redis_client.delete(keys.lease)
            successor = Lease(aredis, keys, Scripts(aredis), 30)
            assert await successor.try_acquire() and successor.token == stale.lease.token + 1
            response = await client.post("/v1/feedback", json={"items": items(x[40:], y[40:], "t")})
            assert response.status_code == 202
            before = snapshot(redis_client, model_name)

            with pytest.raises(Fenced):  # reads the 20 new items, refused at the buffer insert
                await stale.step()
            with pytest.raises(Fenced):
                await stale.publish()
            assert stale.metrics.publish["failed"]._value.get() == 1  # counted
            with pytest.raises(Fenced):
                await fenced_hset(aredis, keys, stale.lease.token, keys.learner_stats,
                                  {"processed": 999})
            with pytest.raises(Fenced):
                await fenced(stale.registry.allocate_version(stale.lease.token))
            assert not await stale.lease.renew()
            assert snapshot(redis_client, model_name) == before  # nothing written
            # The successor's own writes still go through.
            assert await fenced(stale.registry.allocate_version(successor.token)) == 1
        finally:
            await aredis.aclose()
