"""Mnemo behind Sentinel (MNEMO_REDIS_MODE=sentinel): a primary, two replicas and three sentinels
on loopback ports. The primary is SIGKILLed; once the sentinels promote a replica, the same
API and learner processes write and learn on it (no restart). Then a coordinated failover
(SENTINEL FAILOVER) demotes the primary they use while it stays up: they follow that too. The
database that MNEMO_REDIS_URL names applies to the primary the sentinels find."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from service.store.keys import Keys
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import DIM, Feeder, blobs, items, versions
from tests.reliability.redis_topologies import SentinelTopology, elapsed, start_model, wait_until

DB = 3  # not the default: shows the URL's database reaches the primary


def test_a_sentinel_failover_is_followed_without_restarting_anything(
        tmp_path: Path, procs: Procs) -> None:
    started = time.monotonic()
    model = "sentinel"
    with SentinelTopology(tmp_path / "redis", replicas=2) as topology:
        try:
            # The URL's host is not used in sentinel mode: its database (and credentials,
            # TLS) are.
            api_node, learner = start_model(
                procs, model, redis_mode="sentinel", sentinels=topology.addresses,
                sentinel_master=topology.name, redis_url=f"redis://unused.invalid/{DB}")
            pids = {api_node.proc.pid, learner.proc.pid}
            api = httpx.Client(base_url=api_node.url, timeout=30)
            feeder = Feeder([api_node.url], "before", limit=160).start()
            wait_for(feeder.done, 60, "160 items before the failover", procs.logs)
            assert len(feeder.accepted) == 160
            wait_for(lambda: api.get("/v1/stats").json()["samples_seen"] == 160, 60,
                     "the learner to process them", procs.logs)
            with topology.primary.client(db=DB) as direct:
                assert direct.exists(Keys(model).meta) and direct.xlen(Keys(model).stream) >= 0
            with topology.primary.client() as db0:
                assert not db0.exists(Keys(model).meta)
            published = max(versions(api))

            # Replication is asynchronous: the kill must not take the deployment with it.
            topology.wait_replicated()
            old_port = topology.primary.port
            killed_at = time.monotonic()
            topology.primary.kill()
            wait_until(lambda: topology.primary_port() not in (old_port, None), 60,
                       "the sentinels to promote the replica", topology.logs)
            promoted_after = elapsed(killed_at)
            x, y = blobs(40, seed=9)
            batch = items(x, y, "after")
            # The same processes find the new primary through the sentinels: writes work.
            wait_for(lambda: api.post("/v1/feedback", json={"items": batch}).status_code == 202,
                     60, "feedback to be accepted on the new primary", procs.logs, interval=0.2)
            written_after = elapsed(killed_at)
            wait_for(lambda: api.post("/v1/predict", json={"inputs": [[0.0] * DIM]}).json()
                     ["logged"], 30, "predict to log again", procs.logs)
            wait_for(lambda: api.get("/v1/stats").json()["samples_seen"] >= 200
                     and max(versions(api)) > published, 60,
                     "the learner to learn and publish on the new primary", procs.logs)
            with topology.current_primary().client(db=DB) as direct:
                assert direct.hget(Keys(model).counters, "accepted") is not None

            # A coordinated failover: the primary the processes write to now stays up but
            # turns replica (READONLY); they move on without a restart as well.
            demoted = topology.current_primary()
            (spare,) = [n for n in topology.replicas if n is not demoted]
            wait_until(lambda: demoted.info("replication")["connected_slaves"] == 1
                       and spare.info("replication")["master_link_status"] == "up",
                       60, "the other replica to follow the new primary", topology.logs)
            failover_at = time.monotonic()
            wait_until(lambda: topology.sentinel_nodes[0].call("SENTINEL", "FAILOVER",
                                                               topology.name),
                       60, "a sentinel to start the failover", topology.logs)
            wait_until(lambda: topology.primary_port() == spare.port, 60,
                       "the sentinels to promote the other replica", topology.logs)
            # What the sentinels do to the old primary at their next look (up to 10 s), now:
            # it turns replica, and every kept connection to it gets READONLY.
            demoted.call("REPLICAOF", "127.0.0.1", spare.port)
            x, y = blobs(40, seed=10)
            wait_for(lambda: api.post("/v1/feedback", json={"items": items(x, y, "back")})
                     .status_code == 202, 60, "feedback after the coordinated failover",
                     procs.logs, interval=0.2)
            wait_for(lambda: api.post("/v1/predict", json={"inputs": [[0.0] * DIM]}).json()
                     ["logged"], 30, "predict to log on the old primary again", procs.logs)
            followed_after = elapsed(failover_at)
            wait_for(lambda: api.get("/v1/stats").json()["samples_seen"] >= 240, 60,
                     "the learner to learn after the coordinated failover", procs.logs)
            with demoted.client() as old:
                assert old.info("replication")["role"] == "slave"  # up, and a replica now
            assert {api_node.proc.pid, learner.proc.pid} == pids
            assert all(p.proc.popen.poll() is None for p in (api_node, learner))
            api.close()
            print(f"replica promoted {promoted_after:.1f} s and feedback accepted again "
                  f"{written_after:.1f} s after the kill; writes on the next one "
                  f"{followed_after:.1f} s after SENTINEL FAILOVER; pids {sorted(pids)} unchanged")
        finally:
            procs.stop_all()  # before the servers go
    print(f"sentinel failover: {elapsed(started):.1f} s")
