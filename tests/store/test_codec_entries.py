"""encode_entries: the learner's batch encoding is encode_entry's bytes, row for row."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from service.store.codec import decode_entry, encode_entries, encode_entry


@pytest.mark.parametrize("tags", [["", "", ""], ["", "tåg", ""]])
def test_batch_entries_are_encode_entry_byte_for_byte(tags: list[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    x[1, 2] = np.nan
    y = [0, 7, 2**31 - 1]
    entries = encode_entries(x, y, tags)
    assert entries == [encode_entry(x[i], y[i], tags[i]) for i in range(3)]
    back = decode_entry(entries[1])
    assert back[1:] == (7, tags[1]) and np.array_equal(back[0], x[1], equal_nan=True)


def test_batch_of_rows_selected_from_a_wider_read() -> None:
    x = np.arange(40, dtype=np.float32).reshape(8, 5)
    kept = np.array([1, 4, 6])
    entries = encode_entries(x[kept], [1, 4, 6], ["", "", ""])
    assert entries == [encode_entry(x[i], i, "") for i in kept]
    assert encode_entries(x[:0], [], []) == []


def test_a_class_index_beyond_int32_is_refused_like_encode_entry() -> None:
    x = np.zeros((1, 2), dtype=np.float32)
    with pytest.raises(struct.error):
        encode_entry(x[0], 2**31, "")
    with pytest.raises(struct.error):
        encode_entries(x, [2**31], [""])
