"""Model versions: metadata, weight and learner-state blobs, statuses, the current pointer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.store.connection import StoreError
from service.store.keys import Keys
from service.store.scripts import Scripts

if TYPE_CHECKING:
    from service.config import Settings


class VersionNotFound(LookupError):
    pass


class VersionPruned(VersionNotFound):
    """The version exists (its meta is listed) but retention deleted its blobs."""


class VersionRejected(ValueError):
    pass


# Candidates per prune script call: bounds the arguments of one EVALSHA.
PRUNE_CHUNK = 500


@dataclass(frozen=True)
class Pointer:
    version: int
    epoch: int


@dataclass(frozen=True)
class DeploymentIdentity:
    """What must agree between the settings and what Redis already holds."""

    input_dim: int
    label_type: str
    model_name: str
    # The feature schema's canonical JSON ("" for vectors): the same width under another
    # schema would be encoded and read differently.
    features: str = ""

    @classmethod
    def of(cls, settings: Settings) -> DeploymentIdentity:
        features = "" if settings.features is None else json.dumps(
            settings.features, sort_keys=True, separators=(",", ":"))
        return cls(settings.input_dim, settings.label_type, settings.model_name, features)


class Registry:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        # Every version below this number is pruned or kept for good (activated): retention
        # need not look at it again. In memory only: after a restart the first prune looks at
        # every version once.
        self._prune_floor = 0

    async def init_deployment(
        self,
        identity: DeploymentIdentity,
        labels: list[str],
        v0_meta: dict[str, Any],
        v0_weights: bytes,
    ) -> bool:
        """Check identity against stored state, grow the vocabulary by the declared labels and
        create version 0 on the very first start. Returns whether version 0 was created."""
        k = self._keys
        result = await self._scripts.init_deployment(
            keys=[k.meta, k.vocab, k.vocab_order, k.current, k.versions, k.statuses,
                  k.version(0), k.next_version],
            args=[identity.input_dim, identity.label_type, identity.model_name,
                  identity.features, json.dumps(v0_meta), v0_weights, *labels],
        )
        if result[0] == b"mismatch":
            field, stored, given = (part.decode() or "(unset)" for part in result[1:])
            raise StoreError(
                f"MNEMO_{field.upper()}={given} does not match this deployment's stored "
                f"{field}={stored}; refusing to start"
            )
        return bool(result[1])

    async def labels(self) -> list[str]:
        """The class vocabulary in class-index order (labels as text)."""
        return [b.decode() for b in await self._redis.lrange(self._keys.vocab_order, 0, -1)]

    async def current(self) -> Pointer | None:
        raw = await self._redis.hmget(self._keys.current, "version", "epoch")
        if raw[0] is None:
            return None
        return Pointer(int(raw[0]), int(raw[1]))

    async def meta(self, version: int) -> dict[str, Any]:
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(k.version(version), "meta")
        pipe.hget(k.statuses, version)
        pipe.hexists(k.version(version), "weights")
        raw, status, has_blobs = await pipe.execute()
        if raw is None:
            raise VersionNotFound(version)
        meta = json.loads(raw)
        meta["status"] = status.decode() if status else "archived"
        # False once retention deleted the weights and learner state (prune): still listed,
        # but neither exportable nor activatable.
        meta["blobs"] = bool(has_blobs)
        return meta

    async def list_versions(
        self, limit: int, before: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; ``next`` is the cursor to pass as ``before`` for the next page."""
        top = f"({before}" if before is not None else "+inf"
        numbers = await self._redis.zrevrangebyscore(
            self._keys.versions, top, "-inf", start=0, num=limit + 1
        )
        numbers = [int(n) for n in numbers]
        page, more = numbers[:limit], len(numbers) > limit
        metas = [await self.meta(n) for n in page]
        return metas, (page[-1] if more and page else None)

    async def weights(self, version: int) -> bytes:
        key = self._keys.version(version)
        blob = await self._redis.hget(key, "weights")
        if blob is None:
            if await self._redis.hexists(key, "meta"):
                raise VersionPruned(version)
            raise VersionNotFound(version)
        return blob

    async def state(self, version: int) -> bytes | None:
        return await self._redis.hget(self._keys.version(version), "state")

    async def allocate_version(self, token: int | None = None) -> int:
        """The next version number. With the learner's fencing token it is only reserved, not
        taken: publish() advances the counter in the same atomic step that stores the version,
        so a learner killed between the two leaves no gap in the version sequence (the next
        lease holder gets the same number). Raises ResponseError 'FENCED' when `token` is no
        longer the fencing token."""
        if token is None:
            return int(await self._redis.incr(self._keys.next_version))
        if await self._redis.get(self._keys.fence) != str(token).encode():
            raise ResponseError("FENCED this learner no longer holds the lease")
        return int(await self._redis.get(self._keys.next_version) or 0) + 1

    async def publish(
        self,
        *,
        token: int,
        version: int,
        meta: dict[str, Any],
        weights: bytes,
        state: bytes,
        status: str,
        last_stream_id: str,
        samples_seen: int,
        parent: int | None = None,
    ) -> int:
        """Store a version and commit the learner cursor atomically; returns the new epoch
        (0 for a rejected version). Given the `parent` it was trained from, an active version
        becomes current only while the parent still is: otherwise an operator activated
        another version meanwhile, the new one is stored as archived and -1 is returned.
        Raises redis ResponseError 'FENCED' after losing the lease."""
        k = self._keys
        epoch = await self._scripts.publish(
            keys=[k.fence, k.version(version), k.versions, k.current, k.statuses, k.activated,
                  k.events, k.cursor, k.next_version],
            args=[token, version, json.dumps(meta), weights, state, status, last_stream_id,
                  samples_seen, "" if parent is None else parent],
        )
        return int(epoch)

    async def activate(self, version: int) -> int:
        k = self._keys
        result = await self._scripts.activate(
            keys=[k.current, k.statuses, k.activated, k.events, k.version(version)],
            args=[version],
        )
        if result[0] == b"missing":
            raise VersionNotFound(version)
        if result[0] == b"rejected":
            raise VersionRejected(version)
        return int(result[1])

    async def prune(self, keep: int, token: int) -> list[int]:
        """Retention (docs/DESIGN.md §3): delete the weights and learner-state blobs of every version
        outside the newest `keep` that was never activated by an operator and is not current;
        their meta stays listed with `blobs: false`. Returns the versions pruned by this call,
        oldest first. Fenced like every learner write: raises redis ResponseError 'FENCED'
        (deleting nothing) after losing the lease."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        # Outside the window, down to the floor (the script re-checks every condition).
        pipe.zrevrangebyscore(k.versions, "+inf", self._prune_floor, start=keep, num=-1)
        pipe.zrevrange(k.versions, keep - 1, keep - 1)  # the oldest version inside the window
        outside, edge = await pipe.execute()
        candidates = [int(v) for v in outside]
        pruned: list[int] = []
        held: list[int] = []
        for start in range(0, max(len(candidates), 1), PRUNE_CHUNK):
            chunk = candidates[start : start + PRUNE_CHUNK]
            done, kept = await self._scripts.prune(
                keys=[k.fence, k.versions, k.activated, k.current, *map(k.version, chunk)],
                args=[token, keep, *chunk],
            )
            pruned += (int(v) for v in done)
            held += (int(v) for v in kept)
        if edge:
            # Versions pushed out of the window after our read are all >= edge.
            self._prune_floor = min([int(edge[0]), *held])
        return sorted(pruned)

    async def cursor(self) -> tuple[str, int]:
        """The committed stream position and samples_seen (as of the last publish)."""
        raw = await self._redis.hmget(self._keys.cursor, "last_stream_id", "samples_seen")
        return (raw[0] or b"0-0").decode(), int(raw[1] or 0)
