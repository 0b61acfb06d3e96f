"""Where the learner stands in the feedback stream: the committed id (what the current version
includes), what it has read since and not yet published (to acknowledge once a version
includes it), and how many labelled items it has processed."""

from __future__ import annotations

from service.worker.feed import stream_id_key


class StreamCursor:
    def __init__(self, committed: str = "0-0", samples_seen: int = 0) -> None:
        self.committed = committed
        self.samples_seen = samples_seen
        self.last_id: str | None = None  # the newest id read (what the next version includes)
        self.unacked: list[str] = []
        self.unpublished = 0
        self.oldest_unpublished_ms: int | None = None

    def split(self, ids: list[str]) -> tuple[list[int], list[str]]:
        """(positions of the ids after the committed one, the ids at or before it). Those were
        published before a crash and never acknowledged: acknowledge them, learn nothing twice."""
        committed = stream_id_key(self.committed)
        fresh = [i for i, sid in enumerate(ids) if stream_id_key(sid) > committed]
        stale = [sid for sid in ids if stream_id_key(sid) <= committed]
        return fresh, stale

    def advance(self, ids: list[str], accepted_ms: list[int]) -> None:
        """These fresh ids were processed (trained on or held out)."""
        if not ids:
            return
        self.samples_seen += len(ids)
        self.unpublished += len(ids)
        self.unacked.extend(ids)
        # A read is in stream order; monotonic even when entries a fenced-out learner took are
        # read late, out of order (one comparison a read, not one per id).
        self.last_id = max(self.last_id or ids[-1], ids[-1], key=stream_id_key)
        oldest = min(accepted_ms)
        self.oldest_unpublished_ms = min(self.oldest_unpublished_ms or oldest, oldest)

    def commit(self) -> list[str]:
        """A version now includes everything read: it becomes the committed position; returns
        the ids to acknowledge."""
        assert self.last_id is not None
        acked, self.unacked = self.unacked, []
        self.committed = self.last_id
        self.unpublished, self.oldest_unpublished_ms = 0, None
        return acked
