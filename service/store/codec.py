"""Binary encodings of what Mnemo stores: float32 vectors and replay entries (never pickle)."""

from __future__ import annotations

import struct

import numpy as np

_ENTRY_HEADER = struct.Struct("<iH")  # class index, tag length


def vector_to_bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def vector_from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def encode_entry(x: np.ndarray, y: int, tag: str) -> bytes:
    """A replay/holdout/golden entry: class index, tag and the float32 input."""
    tag_bytes = tag.encode()
    return _ENTRY_HEADER.pack(y, len(tag_bytes)) + tag_bytes + vector_to_bytes(x)


def decode_entry(blob: bytes) -> tuple[np.ndarray, int, str]:
    y, tag_len = _ENTRY_HEADER.unpack_from(blob)
    start = _ENTRY_HEADER.size
    tag = blob[start : start + tag_len].decode()
    return vector_from_bytes(blob[start + tag_len :]), y, tag


def label_to_text(label: str | int) -> str:
    return str(label)


def label_from_text(text: str, label_type: str) -> str | int:
    return int(text) if label_type == "int" else text


_LABELLED_HEADER = struct.Struct("<HH")  # label length, tag length


def encode_labelled(x: bytes, label: str, tag: str) -> bytes:
    """A golden-set entry keeps its label as text: it may name a class not yet learned."""
    label_bytes, tag_bytes = label.encode(), tag.encode()
    return _LABELLED_HEADER.pack(len(label_bytes), len(tag_bytes)) + label_bytes + tag_bytes + x


def decode_labelled(blob: bytes) -> tuple[np.ndarray, str, str]:
    label_len, tag_len = _LABELLED_HEADER.unpack_from(blob)
    start = _LABELLED_HEADER.size
    label = blob[start : start + label_len].decode()
    tag = blob[start + label_len : start + label_len + tag_len].decode()
    return vector_from_bytes(blob[start + label_len + tag_len :]), label, tag
