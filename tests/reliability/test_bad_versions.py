"""Bad versions: a published version whose weights blob is corrupt (flipped bytes, checksum
mismatch) or is a pickle leaves every process on the version it serves, and each API process
counts the failure in mnemo_model_load_failures_total. The pickle is refused before anything
could unpickle it: unpickling it would create a marker file, which never appears."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import httpx
import redis
import torch

from service.store.connection import connect
from service.store.keys import Keys
from service.store.registry import Registry
from service.store.scripts import Scripts
from tests.conftest import REDIS_URL
from tests.e2e.procs import Procs, wait_for
from tests.reliability.cluster import DIM, Cluster, Node, blobs, items


class CreatesFile:
    """Unpickling this object opens (creates) `path`: proof that a blob was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def pickle_blobs(marker: Path) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save({"weight": CreatesFile(marker)}, buffer)  # torch's zip of a pickle
    return {"raw pickle": pickle.dumps(CreatesFile(marker)), "torch.save": buffer.getvalue()}


def flipped(blob: bytes) -> bytes:
    """The last 16 bytes (tensor data, past the safetensors header) inverted."""
    return blob[:-16] + bytes(b ^ 0xFF for b in blob[-16:])


async def publish_blob(model: str, version: int, weights: bytes, state: bytes = b"") -> None:
    """Store `weights` as the next version, made current, through the learner's fenced publish
    under the running learner's own token (it has no feedback, so publishes nothing itself)."""
    aredis = connect(REDIS_URL, 5)
    try:
        keys = Keys(model)
        token = int(await aredis.get(keys.fence))
        registry = Registry(aredis, keys, Scripts(aredis))
        pointer = await registry.current()
        assert pointer is not None
        last_stream_id, samples_seen = await registry.cursor()  # unchanged: no items added
        meta = json.loads(await aredis.hget(keys.version(0), "meta"))
        meta.update(version=version, parent=pointer.version, samples_seen=samples_seen,
                    last_stream_id=last_stream_id)
        assert await registry.allocate_version(token) == version
        epoch = await registry.publish(token=token, version=version, meta=meta, weights=weights,
                                       state=state, status="active", parent=pointer.version,
                                       last_stream_id=last_stream_id, samples_seen=samples_seen)
        assert epoch > 0
    finally:
        await aredis.aclose()


def served(node: Node, probe: list[list[float]]) -> int:
    """The version an API process answers with (readyz and predict agree)."""
    ready = httpx.get(f"{node.url}/readyz", timeout=5).json()["model_version"]
    answer = httpx.post(f"{node.url}/v1/predict", json={"inputs": probe}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == ready
    return int(ready)


async def test_corrupt_and_pickled_blobs_are_refused_by_every_process(
    tmp_path: Path, procs: Procs, model_name: str, redis_client: redis.Redis
) -> None:
    marker = tmp_path / "unpickled"
    pickled = pickle_blobs(marker)
    control = tmp_path / "control"  # the same payload really does create its file when unpickled
    pickle.loads(pickle_blobs(control)["raw pickle"])
    assert control.exists()
    control.unlink()
    torch.load(io.BytesIO(pickle_blobs(control)["torch.save"]), weights_only=False)
    assert control.exists()

    cluster = Cluster(procs, REDIS_URL, model_name)
    apis = [cluster.serve(), cluster.serve()]
    learner = cluster.learn()
    probe = [[0.5] * DIM]
    good = redis_client.hget(Keys(model_name).version(0), "weights")
    assert all(served(api, probe) == 0 for api in apis)
    wait_for(lambda: httpx.get(f"{apis[0].url}/v1/stats").json()["learning"] == "running", 30,
             "the learner to run", procs.logs)

    bad = {"flipped bytes": flipped(good), **pickled}
    for failures, (what, blob) in enumerate(bad.items(), start=1):
        await publish_blob(model_name, failures, blob)
        for api in apis:
            wait_for(lambda: api.metric("mnemo_model_load_failures_total") == failures,  # noqa: B023
                     30, f"the {what} blob to be refused", procs.logs)
            assert served(api, probe) == 0, what
            assert api.metric("mnemo_model_version") == 0
            assert api.metric("mnemo_model_swaps_total") == 0
        assert learner.proc.popen.poll() is None, procs.logs()
        assert not marker.exists(), f"the {what} blob was unpickled"

    # A learner restarted now, with a corrupt `current`, comes up from the nearest good
    # ancestor instead of crash-looping; it learns and publishes (archived: current moved).
    learner.proc.popen.kill()
    learner.proc.popen.wait()
    learner = cluster.learn()
    x, y = blobs(60, seed=3)
    response = httpx.post(f"{apis[0].url}/v1/feedback", json={"items": items(x, y, "after")})
    assert response.status_code == 202
    keys = Keys(model_name)
    wait_for(lambda: redis_client.hget(keys.cursor, "samples_seen") == b"60", 60,
             "the restarted learner to publish", procs.logs)
    assert learner.metric("mnemo_model_publish_total", outcome="failed") >= 1
    assert all(served(api, probe) == 0 for api in apis)

    # They still follow the pointer: the next good version is served by both.
    last = max(int(v) for v in redis_client.zrange(keys.versions, 0, -1)) + 1
    state = redis_client.hget(keys.version(last - 1), "state")
    await publish_blob(model_name, last, good, state)
    for api in apis:
        wait_for(lambda: served(api, probe) == last, 30,  # noqa: B023
                 "the good version to be served", procs.logs)
        assert api.metric("mnemo_model_load_failures_total") == len(bad)
    # The learner continues from it: its next version's parent is the good one.
    response = httpx.post(f"{apis[0].url}/v1/feedback", json={"items": items(x, y, "later")})
    assert response.status_code == 202
    wait_for(lambda: max(int(v) for v in redis_client.zrange(keys.versions, 0, -1)) > last,
             60, "a version after the good one", procs.logs)
    newest = httpx.get(f"{apis[0].url}/v1/versions", params={"limit": 1}).json()["versions"][0]
    assert (newest["parent"], newest["status"]) == (last, "active"), newest
    assert learner.proc.popen.poll() is None, procs.logs()
    assert not marker.exists()
