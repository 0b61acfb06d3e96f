"""API crash mid-load: an API process is SIGKILLed while three clients send feedback. Every
item it answered 202 is in the stream (exactly once), and the clients saw only connection
errors, never an HTTP error status."""

from __future__ import annotations

import os
import signal

import redis

from tests.conftest import REDIS_URL
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import Cluster, Feeder, accepted_counter, seen_ids, stream_ids


def test_items_answered_202_survive_a_sigkilled_api(
    procs: Procs, model_name: str, redis_client: redis.Redis
) -> None:
    cluster = Cluster(procs, REDIS_URL, model_name)
    api = cluster.serve()
    feeders = [Feeder([api.url], f"client{i}-", pause=0.0, seed=i).start() for i in range(3)]
    try:
        wait_for(lambda: all(len(f.accepted) >= 200 for f in feeders), 60,
                 "the clients to get going", procs.logs)
        os.kill(api.proc.pid, signal.SIGKILL)
        api.proc.popen.wait(10)
        wait_for(lambda: all(f.transport_errors for f in feeders), 30,
                 "every client to see the connection fail")
    finally:
        for feeder in feeders:
            feeder.stop()
    accepted = [item for f in feeders for item in f.accepted]
    for feeder in feeders:
        assert set(feeder.statuses) == {(api.url, 202)}, feeder.statuses  # no HTTP error at all
    in_stream = stream_ids(redis_client, model_name)  # no learner: nothing trimmed
    assert len(in_stream) == len(set(in_stream))
    assert set(accepted) <= set(in_stream)
    # At most the batches in flight at the kill were stored without their 202 reaching a client.
    assert len(in_stream) - len(accepted) <= 3 * feeders[0].batch
    assert seen_ids(redis_client, model_name) == set(in_stream)
    assert accepted_counter(redis_client, model_name) == len(in_stream)
    print(f"{len(accepted)} items answered 202 before the SIGKILL, {len(in_stream)} stored")
