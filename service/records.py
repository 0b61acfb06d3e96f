"""A request's records, checked against the deployment's schema, with their stored form: what
predict hands the micro-batcher and the prediction log (models/features.py encodes them)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.features import Record
from service.store.codec import vector_to_bytes


@dataclass(frozen=True)
class RecordRows:
    records: list[Record]
    stored: list[bytes]  # record_to_bytes of each record: what Redis keeps

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, rows: slice) -> RecordRows:
        return RecordRows(self.records[rows], self.stored[rows])

    @classmethod
    def concat(cls, parts: list[RecordRows]) -> RecordRows:
        return cls([r for p in parts for r in p.records], [b for p in parts for b in p.stored])


def stored_form(inputs: np.ndarray | RecordRows) -> list[bytes]:
    """Each row's stored form: a record's JSON, a vector's float32 bytes."""
    if isinstance(inputs, RecordRows):
        return inputs.stored
    return [vector_to_bytes(row) for row in inputs]
