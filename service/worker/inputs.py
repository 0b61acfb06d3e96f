"""What the learner makes of stored inputs (store/codec.py): vectors as they are; records
(MNEMO_FEATURES) through the learner's encoder, which gives new categorical values a slot as it
learns from them and travels in every version it publishes (models/checkpoint.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.checkpoint import features_metadata
from models.features import RecordEncoder, record_from_bytes
from service.config import Settings


class LearnerInputs:
    def __init__(self, settings: Settings) -> None:
        self._dim = settings.input_dim
        schema = settings.feature_schema
        self.encoder: RecordEncoder | None = None if schema is None else RecordEncoder(schema)

    def matrix(self, stored: Sequence[bytes], *, learn: bool) -> np.ndarray:
        """float32 (len(stored), input_dim). `learn`: the rows are learned from, so their new
        categorical values get slots first (a value keeps its slot for good, so every row
        encoded before stays valid)."""
        if self.encoder is None:
            size = 4 * self._dim
            for blob in stored:
                if len(blob) != size:
                    raise ValueError(f"{len(blob)} input bytes, expected {size} (MNEMO_INPUT_DIM)")
            return (np.frombuffer(b"".join(stored), dtype="<f4").astype(np.float32)
                    .reshape(len(stored), self._dim))
        records = [record_from_bytes(blob) for blob in stored]
        if learn:
            self.encoder.observe(records)
        return self.encoder.encode(records)

    def adopt(self, loaded: RecordEncoder | None) -> bool:
        """Continue from a loaded version's encoder. One whose vocabularies the learner's extend
        (the version it refused a candidate for, an older one of its lineage) changes nothing:
        every value keeps its column. Any other is taken as it is; then True: rows encoded
        before must be encoded again."""
        if self.encoder is None or loaded is None or _extends(self.encoder, loaded):
            return False
        self.encoder = loaded
        return True

    def metadata(self) -> dict[str, str]:
        """What a published version's weights carry of the encoding (none for vectors)."""
        return features_metadata(self.encoder)


def _extends(current: RecordEncoder, older: RecordEncoder) -> bool:
    if current.schema != older.schema or current.hash_seed != older.hash_seed:
        return False
    for spec in current.schema.fields:
        if spec.kind == "categorical":
            mine, theirs = current.vocabulary(spec.name), older.vocabulary(spec.name)
            if mine[: len(theirs)] != theirs:
                return False
    return True
