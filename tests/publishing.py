"""Publishing a version the way the learner does, for tests that need a learned version in
the registry without running the learner process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from models.checkpoint import labels_metadata, model_to_bytes, tensors_to_bytes
from models.learner import IncrementalLearner
from service.config import Settings
from service.store.connection import connect
from service.store.keys import Keys
from service.store.registry import Registry
from service.store.scripts import Scripts
from service.versioning import version_meta
from tests.conftest import REDIS_URL


@asynccontextmanager
async def open_store(model_name: str) -> AsyncIterator[tuple[Registry, Scripts, Keys]]:
    """The model's registry on the test Redis, with its scripts and keys."""
    aredis = connect(REDIS_URL, 5)
    keys = Keys(model_name)
    scripts = Scripts(aredis)
    try:
        yield Registry(aredis, keys, scripts), scripts, keys
    finally:
        await aredis.aclose()


async def publish_learned(settings: Settings, registry: Registry, scripts: Scripts, keys: Keys,
                          learner: IncrementalLearner, labels: list[str | int],
                          samples_seen: int) -> tuple[int, bytes]:
    """Publish the learner's snapshot as the next active version (parent 0) under a lease of
    our own; returns the version and its weights blob."""
    weights = model_to_bytes(learner.snapshot(), labels_metadata([str(v) for v in labels]))
    token = int(await scripts.lease_acquire(keys=[keys.lease, keys.fence],
                                            args=["publishing-test", 60_000]))
    version = await registry.allocate_version(token)
    meta = version_meta(settings, version=version, parent=0, samples_seen=samples_seen,
                        last_stream_id="1-0", labels=labels, evaluation={})
    await registry.publish(token=token, version=version, meta=meta, weights=weights,
                           state=tensors_to_bytes(learner.state_dict(), learner.meta()),
                           status="active", last_stream_id="1-0", samples_seen=samples_seen,
                           parent=0)
    return version, weights
