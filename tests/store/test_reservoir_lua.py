"""The learner's ingest on the real Redis: buffer_insert.lua's reservoir policy (Algorithm R
with a caller-supplied u, idempotent by stream id), the holdout beside it, and every write
guarded by the learner's fencing token."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest
import redis
from redis.commands.core import Script
from scipy.stats import chisquare

from models.replay import reservoir_slot
from service.store.buffers import class_index_key
from service.store.connection import connect
from service.store.ingest import IngestItem
from service.store.ingest import ingest as service_ingest
from service.store.keys import Keys
from service.store.scripts import Scripts
from tests.conftest import REDIS_URL, snapshot

TOKEN = "17"
NOT_KEPT, ALREADY_INSERTED, HOLDOUT = -1, -2, -3


@pytest.fixture
def keys(model_name: str) -> Keys:
    return Keys(model_name)


class _SyncIngest:
    """service.store.ingest.ingest's routing over a sync client, so a test can pipeline
    thousands of runs: "r" items through buffer_insert.lua (reservoir policy), "h" items
    through holdout_insert.lua; results merged per item as the learner sees them."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        lua = resources.files("service.store").joinpath("lua")
        self.buffer: Script = client.register_script(lua.joinpath("buffer_insert.lua").read_text())
        self.holdout: Script = client.register_script(lua.joinpath("holdout_insert.lua").read_text())
        self.keys = keys

    def __call__(self, keys: list[str], args: list[object], client: object = None) -> list[int] | None:
        token, capacity, holdout_capacity, *rest = args
        items = [rest[i : i + 4] for i in range(0, len(rest), 4)]
        k = self.keys
        buffered = [a for it in items if it[1] == "r" for a in (it[0], it[2], 0, it[3])]
        held = [a for it in items if it[1] == "h" for a in (it[0], it[3])]
        target = client or self.buffer.registered_client
        pipe = target if client is not None else target.pipeline(transaction=False)
        if buffered or not held:
            self.buffer(keys=[k.reservoir, k.reservoir_meta, class_index_key(k), k.fence],
                        args=[token, "reservoir", capacity, 0, *buffered], client=pipe)
        if held:
            self.holdout(keys=[k.holdout, k.reservoir_meta, k.fence],
                         args=[token, holdout_capacity, *held], client=pipe)
        if client is not None:
            return None
        replies = iter(pipe.execute())
        return _merge(items, next(replies) if buffered or not held else [],
                      next(replies) if held else [])


def _merge(items: list[list[object]], slots: list[int], holdouts: list[int]) -> list[int]:
    slot_iter, held_iter = iter(slots), iter(holdouts)
    return [(HOLDOUT if next(held_iter) == 1 else ALREADY_INSERTED) if it[1] == "h"
            else int(next(slot_iter)) for it in items]


@pytest.fixture
def ingest(redis_client: redis.Redis, keys: Keys) -> Iterator[_SyncIngest]:
    redis_client.set(keys.fence, TOKEN)
    yield _SyncIngest(redis_client, keys)
    redis_client.delete(class_index_key(keys))


def _keys(keys: Keys) -> list[str]:
    return [keys.reservoir, keys.reservoir_meta, keys.holdout, keys.fence]


def _args(items: list[tuple[str, str, float, bytes]], capacity: int, holdout_capacity: int = 100,
          token: str = TOKEN) -> list[object]:
    args: list[object] = [token, capacity, holdout_capacity]
    for sid, kind, u, entry in items:
        args += [sid, kind, repr(float(u)), entry]
    return args


def _sid(position: int) -> str:
    # Crosses a millisecond boundary every 7 positions so both parts of the id are compared.
    return f"{1_700_000_000_000 + position // 7}-{position % 7}"


def test_every_position_is_kept_with_probability_k_over_n(
    redis_client: redis.Redis, keys: Keys, ingest: _SyncIngest
) -> None:
    """2000 independent runs of 40 positions into 8 slots: each position ends up in the
    reservoir 2000·8/40 = 400 times in expectation (chi-square against uniform), and every
    decision equals the in-memory mirror's for the same u."""
    runs, n, k = 2000, 40, 8
    rng = np.random.default_rng(20240611)
    us = rng.random((runs, n))
    kept = np.zeros(n, dtype=np.int64)
    chunk = 100
    for first in range(0, runs, chunk):
        pipe = redis_client.pipeline(transaction=False)
        for run in range(first, first + chunk):
            items = [(_sid(p), "r", us[run, p], str(p).encode()) for p in range(n)]
            ingest(keys=_keys(keys), args=_args(items, k), client=pipe)
            pipe.hgetall(keys.reservoir)
            pipe.delete(keys.reservoir, keys.reservoir_meta, class_index_key(keys))
        replies = pipe.execute()
        for i, run in enumerate(range(first, first + chunk)):
            slots, reservoir = replies[3 * i], replies[3 * i + 1]
            mirror: dict[int, int] = {}
            for p in range(n):
                expected = reservoir_slot(p + 1, k, float(us[run, p]))
                assert slots[p] == (NOT_KEPT if expected is None else expected), (run, p)
                if expected is not None:
                    mirror[expected] = p
            stored = {int(slot): int(entry) for slot, entry in reservoir.items()}
            assert stored == mirror, run
            kept[list(stored.values())] += 1
    assert kept.sum() == runs * k
    result = chisquare(kept)  # expected: uniform, runs * k / n each
    assert result.pvalue > 0.001, (result, kept.tolist())
    # The first K positions fill the slots in order; later ones are kept with falling chance
    # per insert but equal chance overall: the last position is kept as often as the first.
    assert abs(int(kept[0]) - int(kept[-1])) < 120, kept.tolist()


def test_slot_decisions_match_the_mirror_at_the_edges(keys: Keys, ingest: _SyncIngest) -> None:
    """u at the boundaries: 0, exactly K/seen (j == K: not kept), j == K-1, and the largest
    double below 1."""
    k = 4
    fill = [(_sid(p), "r", 0.5, b"fill") for p in range(k)]
    assert ingest(keys=_keys(keys), args=_args(fill, k)) == [0, 1, 2, 3]
    # seen:            5     6     7     8     9                        10
    cases = [0.0, 0.5, 0.1, 0.5, float(np.nextafter(1.0, 0.0)), 0.3999999999]
    items = [(_sid(k + i), "r", u, b"x") for i, u in enumerate(cases)]
    slots = ingest(keys=_keys(keys), args=_args(items, k))
    mirror = [reservoir_slot(k + i + 1, k, u) for i, u in enumerate(cases)]
    assert mirror == [0, 3, 0, None, None, 3]
    assert slots == [0, 3, 0, NOT_KEPT, NOT_KEPT, 3]


def test_buffer_never_exceeds_capacity(redis_client: redis.Redis, keys: Keys, ingest: _SyncIngest) -> None:
    k, n = 8, 200
    rng = np.random.default_rng(7)
    for p in range(n):
        slot = ingest(keys=_keys(keys), args=_args([(_sid(p), "r", rng.random(), str(p).encode())], k))
        assert len(slot) == 1
        size = redis_client.hlen(keys.reservoir)
        assert size == min(p + 1, k), (p, size)
        assert int(redis_client.hget(keys.reservoir_meta, "seen")) == p + 1
    # Batched inserts keep the bound too.
    items = [(_sid(n + p), "r", rng.random(), b"b") for p in range(500)]
    slots = ingest(keys=_keys(keys), args=_args(items, k))
    assert all(-1 <= s < k for s in slots)
    assert redis_client.hlen(keys.reservoir) == k
    assert set(redis_client.hkeys(keys.reservoir)) == {str(i).encode() for i in range(k)}
    assert redis_client.hmget(keys.reservoir_meta, "seen", "last_id") == [
        str(n + 500).encode(), _sid(n + 499).encode()]


def test_reinserting_an_id_changes_nothing(redis_client: redis.Redis, keys: Keys,
                                           model_name: str, ingest: _SyncIngest) -> None:
    k = 3
    items = [(_sid(p), "h" if p == 4 else "r", 0.01, f"first-{p}".encode()) for p in range(10)]
    first = ingest(keys=_keys(keys), args=_args(items, k, holdout_capacity=5))
    assert first[4] == HOLDOUT
    before = snapshot(redis_client, model_name)
    # The last id, an earlier one, the holdout one and one below everything: all -2, all at
    # u=0 (which would overwrite slot 0 if it were taken as new).
    again = [(_sid(9), "r", 0.0, b"again"), (_sid(2), "r", 0.0, b"again"),
             (_sid(4), "h", 0.0, b"again"), ("0-1", "r", 0.0, b"again")]
    assert ingest(keys=_keys(keys), args=_args(again, k, holdout_capacity=5)) == [ALREADY_INSERTED] * 4
    assert snapshot(redis_client, model_name) == before
    # A batch mixing a re-read with new ids: only the new one counts as seen.
    mixed = [(_sid(8), "r", 0.0, b"again"), (_sid(10), "r", 0.0, b"new")]
    assert ingest(keys=_keys(keys), args=_args(mixed, k)) == [ALREADY_INSERTED, 0]
    assert redis_client.hget(keys.reservoir, "0") == b"new"
    assert int(redis_client.hget(keys.reservoir_meta, "seen")) == 10  # 9 reservoir + this one


def test_holdout_items_never_consume_a_reservoir_position(
    redis_client: redis.Redis, keys: Keys, ingest: _SyncIngest
) -> None:
    k, holdout_capacity = 4, 3
    rng = np.random.default_rng(3)
    kinds = ["r", "h", "r", "r", "h", "h", "r", "r", "h", "r", "h", "r", "r"]
    us = rng.random(len(kinds))
    items = [(_sid(p), kind, us[p], f"{kind}{p}".encode()) for p, kind in enumerate(kinds)]
    slots = ingest(keys=_keys(keys), args=_args(items, k, holdout_capacity))
    seen = 0
    for p, kind in enumerate(kinds):
        if kind == "h":
            assert slots[p] == HOLDOUT
            continue
        seen += 1  # only reservoir items advance Algorithm R's count
        expected = reservoir_slot(seen, k, float(us[p]))
        assert slots[p] == (NOT_KEPT if expected is None else expected), p
    assert int(redis_client.hget(keys.reservoir_meta, "seen")) == kinds.count("r") == 8
    assert redis_client.hget(keys.reservoir_meta, "last_id") == _sid(len(kinds) - 1).encode()
    stored = redis_client.hvals(keys.reservoir)
    assert len(stored) == k and all(v.startswith(b"r") for v in stored)
    holdout = [f"h{p}".encode() for p, kind in enumerate(kinds) if kind == "h"]
    # Newest first, capped at the holdout capacity.
    assert redis_client.lrange(keys.holdout, 0, -1) == holdout[::-1][:holdout_capacity]


async def test_wrong_fencing_token_is_refused_and_writes_nothing(
    redis_client: redis.Redis, keys: Keys, model_name: str
) -> None:
    """Through the service's own ingest on an asyncio client, as the learner calls it."""
    aredis = connect(REDIS_URL, 5)
    scripts = Scripts(aredis)
    items = [IngestItem(_sid(0), False, 0.5, 0, b"a"), IngestItem(_sid(1), True, 0.5, 0, b"b")]

    async def call(token: int) -> list[int]:
        return await service_ingest(aredis, keys, scripts, token=token, policy="reservoir",
                                    capacity=4, holdout_capacity=100, items=items)

    try:
        # No fence at all (no learner ever held the lease): refused.
        with pytest.raises(redis.ResponseError, match="FENCED"):
            await call(17)
        assert snapshot(redis_client, model_name) == {}
        redis_client.set(keys.fence, "18")  # a newer learner took the lease
        before = snapshot(redis_client, model_name)
        with pytest.raises(redis.ResponseError, match="FENCED"):
            await call(17)
        assert snapshot(redis_client, model_name) == before
        # The holder of the current token writes.
        assert await call(18) == [0, HOLDOUT]
        assert redis_client.hlen(keys.reservoir) == 1
        assert redis_client.llen(keys.holdout) == 1
        assert await call(18) == [ALREADY_INSERTED, ALREADY_INSERTED]  # a re-read
    finally:
        await aredis.aclose()
