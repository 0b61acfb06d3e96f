"""service/store/buffers.py on the real Redis, per policy: the script and the in-memory buffer
fed the same u end with identical slot contents (the mirror the learner relies on), re-inserts
change nothing, capacity holds, and a stale fencing token writes nothing."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis
import torch
from redis.asyncio import Redis

from models.replay import BUFFER_NAMES, ClassBalancedBuffer, ReplayBuffer, make_buffer
from service.store import buffers
from service.store.buffers import ALREADY_INSERTED, NOT_KEPT, BufferItem, class_index_key
from service.store.codec import decode_entry, encode_entry
from service.store.keys import Keys
from tests.conftest import REDIS_URL, snapshot

TOKEN = 17
CAPACITY = 12
HORIZON = 12  # small, so the recent policy's fixed rate shows within a short stream


@pytest.fixture
def keys(model_name: str, redis_client: redis.Redis) -> Keys:
    keys = Keys(model_name)
    redis_client.set(keys.fence, TOKEN)
    return keys


@pytest.fixture
async def aredis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def _memory(policy: str) -> ReplayBuffer:
    horizon = HORIZON if policy == "recent" else None
    return make_buffer(policy, CAPACITY, 2, horizon=horizon)


def _horizon(policy: str) -> int | None:
    return HORIZON if policy == "recent" else None


def _sid(position: int) -> str:
    return f"{1_700_000_000_000 + position // 5}-{position % 5}"


def _stream(n: int, seed: int, first: int = 0) -> list[tuple[BufferItem, torch.Tensor]]:
    """Skewed classes, class 4 only in the second half; x = (position, class)."""
    rnd = random.Random(seed)
    out = []
    for p in range(first, first + n):
        y = min(int(rnd.expovariate(0.8)), 3 if p < first + n // 2 else 4)
        x = np.array([p, y], dtype=np.float32)
        out.append((BufferItem(_sid(p), rnd.random(), y, encode_entry(x, y, "t")),
                    torch.from_numpy(x)))
    return out


async def _assert_mirrored(aredis: Redis, keys: Keys, memory: ReplayBuffer,
                           mirror: ReplayBuffer) -> None:
    stored = await buffers.load(aredis, keys)
    x, y = memory.items()
    assert sorted(stored) == list(range(len(memory))), "slots are not the prefix 0..len-1"
    for slot, entry in stored.items():
        ex, ey, _ = decode_entry(entry)
        assert ey == int(y[slot]) and np.array_equal(ex, x[slot].numpy()), slot
    assert torch.equal(mirror.items()[0], x) and torch.equal(mirror.items()[1], y)
    # The class index agrees with the entries, and the per-class counts with the memory's.
    index = {int(m): int(s) for m, s in await aredis.zrange(class_index_key(keys), 0, -1,
                                                            withscores=True)}
    assert index == {slot: int(y[slot]) * 2**32 + slot for slot in range(len(memory))}
    counts = await buffers.class_counts(aredis, keys)
    stored_counts = {c: int((y == c).sum()) for c in counts}
    assert counts == stored_counts and sum(counts.values()) == len(memory)
    if isinstance(memory, ClassBalancedBuffer):
        assert counts == memory.class_counts()


@pytest.mark.parametrize("policy", BUFFER_NAMES)
async def test_script_and_memory_buffer_stay_identical(aredis: Redis, keys: Keys,
                                                       policy: str) -> None:
    """The same u sequence, in batches of varying size, with a retire half way: after every
    step Redis, the deciding memory buffer and the learner's put-only mirror agree slot for
    slot."""
    memory, mirror = _memory(policy), _memory(policy)
    stream = _stream(600, seed=BUFFER_NAMES.index(policy))
    rnd = random.Random(99)
    start, retired = 0, False
    while start < len(stream):
        batch = stream[start : start + rnd.randint(1, 60)]
        start += len(batch)
        slots = await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY,
                                     [item for item, _ in batch], horizon=_horizon(policy))
        expected = [memory.insert(x, item.y, item.u) for item, x in batch]
        assert slots == [NOT_KEPT if s is None else s for s in expected]
        for slot, (item, x) in zip(slots, batch, strict=True):
            if slot >= 0:
                mirror.put(slot, x, item.y)
        await _assert_mirrored(aredis, keys, memory, mirror)
        if start > 300 and not retired:
            # Concept drift: retire every class-1 item, wherever it sits.
            mask = memory.items()[1] == 1
            drop = mask.nonzero().flatten().tolist()
            assert drop, "the test needs something to retire"
            assert await buffers.retire(aredis, keys, TOKEN, drop) == len(drop)
            assert memory.retire(mask) == mirror.retire(mask.clone()) == len(drop)
            await _assert_mirrored(aredis, keys, memory, mirror)
            retired = True
    assert memory.seen == int(await aredis.hget(keys.reservoir_meta, "seen")) == len(stream)
    assert retired


@pytest.mark.parametrize("policy", BUFFER_NAMES)
async def test_reinserting_an_id_changes_nothing(aredis: Redis, keys: Keys, model_name: str,
                                                 redis_client: redis.Redis, policy: str) -> None:
    stream = _stream(40, seed=7)
    await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, [i for i, _ in stream],
                         horizon=_horizon(policy))
    before = snapshot(redis_client, model_name)
    # The last id, earlier ones and one below everything, at u = 0 (which would evict slot 0
    # or a class's first slot if taken as new) and with other entries.
    again = [BufferItem(_sid(p), 0.0, 4, b"again") for p in (39, 20, 0)]
    again.append(BufferItem("0-1", 0.0, 4, b"again"))
    assert await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, again,
                                horizon=_horizon(policy)) == [ALREADY_INSERTED] * 4
    assert snapshot(redis_client, model_name) == before
    # A batch mixing a re-read with a new id: only the new one counts.
    new = _stream(1, seed=8, first=40)[0][0]
    slots = await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, [again[0], new],
                                 horizon=_horizon(policy))
    assert slots[0] == ALREADY_INSERTED and slots[1] >= NOT_KEPT
    assert int(redis_client.hget(keys.reservoir_meta, "seen")) == 41
    assert redis_client.hget(keys.reservoir_meta, "last_id") == _sid(40).encode()


@pytest.mark.parametrize("policy", BUFFER_NAMES)
async def test_capacity_is_never_exceeded(aredis: Redis, keys: Keys, redis_client: redis.Redis,
                                          policy: str) -> None:
    stream = [item for item, _ in _stream(700, seed=9)]
    for item in stream[:100]:
        (slot,) = await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, [item],
                                       horizon=_horizon(policy))
        assert NOT_KEPT <= slot < CAPACITY
        assert redis_client.hlen(keys.reservoir) <= CAPACITY
    slots = await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, stream[100:],
                                 horizon=_horizon(policy))
    assert all(NOT_KEPT <= s < CAPACITY for s in slots)
    assert set(redis_client.hkeys(keys.reservoir)) == {str(i).encode() for i in range(CAPACITY)}
    assert redis_client.zcard(class_index_key(keys)) == CAPACITY


@pytest.mark.parametrize("policy", BUFFER_NAMES)
async def test_a_stale_token_is_refused_and_writes_nothing(
    aredis: Redis, keys: Keys, model_name: str, redis_client: redis.Redis, policy: str
) -> None:
    items = [item for item, _ in _stream(20, seed=10)]
    redis_client.delete(keys.fence)  # no learner ever held the lease
    with pytest.raises(redis.ResponseError, match="FENCED"):
        await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, items[:10],
                             horizon=_horizon(policy))
    assert snapshot(redis_client, model_name) == {}
    redis_client.set(keys.fence, TOKEN)
    await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, items[:10],
                         horizon=_horizon(policy))
    redis_client.set(keys.fence, TOKEN + 1)  # a newer learner took the lease
    before = snapshot(redis_client, model_name)
    with pytest.raises(redis.ResponseError, match="FENCED"):
        await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, items[10:],
                             horizon=_horizon(policy))
    with pytest.raises(redis.ResponseError, match="FENCED"):
        await buffers.retire(aredis, keys, TOKEN, [0, 1])
    assert snapshot(redis_client, model_name) == before
    assert await buffers.retire(aredis, keys, TOKEN + 1, [0, 1]) == 2


async def test_bad_arguments_are_refused_before_any_write(
    aredis: Redis, keys: Keys, model_name: str, redis_client: redis.Redis
) -> None:
    items = [item for item, _ in _stream(5, seed=11)]
    await buffers.insert(aredis, keys, "reservoir", TOKEN, CAPACITY, items)
    before = snapshot(redis_client, model_name)
    # A slot outside the buffer means the caller's mirror diverged: nothing is removed.
    with pytest.raises(redis.ResponseError, match="not in the buffer"):
        await buffers.retire(aredis, keys, TOKEN, [0, 5])
    for policy, item, kwargs in [
        ("fifo", items[0], {}),
        ("reservoir", items[0]._replace(u=1.0), {}),
        ("reservoir", items[0]._replace(y=-1), {}),
        ("class-balanced", items[0], {"horizon": 3}),
    ]:
        with pytest.raises(ValueError):
            await buffers.insert(aredis, keys, policy, TOKEN, CAPACITY, [item], **kwargs)
    # The script checks too, for callers that bypass the wrapper: a bad u late in the batch
    # refuses the whole batch.
    script = aredis.register_script(buffers._source("buffer_insert"))
    new = _stream(2, seed=12, first=5)
    args = [str(TOKEN), "reservoir", CAPACITY, 0]
    args += [new[0][0].stream_id, "0.5", 1, b"ok", new[1][0].stream_id, "1.5", 1, b"bad"]
    with pytest.raises(redis.ResponseError, match="bad item"):
        await script(keys=buffers._keys(keys), args=args)
    assert snapshot(redis_client, model_name) == before


async def test_a_buffer_without_class_index_is_refused_until_reindexed(
    aredis: Redis, keys: Keys, model_name: str, redis_client: redis.Redis
) -> None:
    """A reservoir filled by learner_ingest.lua has no class index: inserting would corrupt the
    per-class counts, so the script refuses until reindex rebuilds it from the entries."""
    stream = _stream(30, seed=13)
    memory = _memory("class-balanced")
    await buffers.insert(aredis, keys, "class-balanced", TOKEN, CAPACITY,
                         [item for item, _ in stream[:20]])
    for item, x in stream[:20]:
        memory.insert(x, item.y, item.u)
    redis_client.delete(class_index_key(keys))
    for field in redis_client.hkeys(keys.reservoir_meta):
        if field.startswith(b"count:"):
            redis_client.hdel(keys.reservoir_meta, field)
    before = snapshot(redis_client, model_name)
    with pytest.raises(redis.ResponseError, match="class index"):
        await buffers.insert(aredis, keys, "class-balanced", TOKEN, CAPACITY, [stream[20][0]])
    assert snapshot(redis_client, model_name) == before
    with pytest.raises(redis.ResponseError, match="FENCED"):
        await buffers.reindex(aredis, keys, TOKEN + 1)
    assert await buffers.reindex(aredis, keys, TOKEN) == CAPACITY
    slots = await buffers.insert(aredis, keys, "class-balanced", TOKEN, CAPACITY,
                                 [item for item, _ in stream[20:]])
    assert slots == [NOT_KEPT if s is None else s
                     for s in (memory.insert(x, item.y, item.u) for item, x in stream[20:])]
    await _assert_mirrored(aredis, keys, memory, memory)
