"""FeedbackReader._decode: a read's stream entries as a batch, inputs converted at once."""

from __future__ import annotations

import numpy as np
import pytest
from redis.asyncio import Redis

from service.store.keys import Keys
from service.worker.feed import FeedbackReader

DIM = 3


def _reader() -> FeedbackReader:
    return FeedbackReader(Redis(), Keys("decode-test"), DIM)  # never connects: decoding only


def _entry(i: int, x: np.ndarray, **extra: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    fields = {b"x": x.astype("<f4").tobytes(), b"y": f"c{i}".encode(), b"tag": b""}
    fields.update({k.encode(): v for k, v in extra.items()})
    return f"{1000 + i}-{i}".encode(), fields


def test_entries_decode_row_for_row() -> None:
    rows = np.array([[1.5, -2.0, 3.25], [np.inf, 0.0, -0.0], [7.0, 8.0, 9.0]], np.float32)
    entries = [_entry(0, rows[0], v=b"4", t=b"17"), _entry(1, rows[1]),
               (b"1002-2", {b"x": rows[2].tobytes(), b"y": b"\xc3\xa9", b"tag": b"t\xc3\xa5g"})]
    batch = _reader()._decode(entries)
    assert batch.ids == ["1000-0", "1001-1", "1002-2"]
    assert batch.x.dtype == np.float32 and batch.x.flags.writeable
    assert np.array_equal(batch.x, rows)
    assert batch.labels == ["c0", "c1", "é"] and batch.tags == ["", "", "tåg"]
    assert batch.versions == [4, None, None] and batch.accepted_ms == [17, 0, 0]


def test_an_empty_read_is_an_empty_batch() -> None:
    batch = _reader()._decode([])
    assert len(batch) == 0 and batch.x.shape == (0, DIM)


def test_an_input_of_the_wrong_size_is_refused() -> None:
    entries = [_entry(0, np.zeros(DIM)), _entry(1, np.zeros(DIM + 1))]
    with pytest.raises(ValueError, match="1001-1"):
        _reader()._decode(entries)
