"""Checks that depend on the deployment's settings (dimension, bounds, label type), made after
the schema has parsed the body and before anything is written."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.features import FeatureSchema, RecordError, record_to_bytes
from service.api.errors import invalid
from service.config import FLOAT32_MAX, Settings
from service.records import RecordRows

Loc = tuple[str | int, ...]


def check_count(count: int, settings: Settings, loc: Loc) -> None:
    if count > settings.max_batch:
        raise invalid(loc, f"at most {settings.max_batch} per request (MNEMO_MAX_BATCH), got {count}")


def to_inputs(rows: Sequence[object], settings: Settings, locs: list[Loc]) -> np.ndarray | RecordRows:
    """A request's inputs as the deployment takes them: records under MNEMO_FEATURES, else
    vectors of MNEMO_INPUT_DIM numbers; the first row that does not fit is a 422 naming it."""
    schema = settings.feature_schema
    if schema is not None:
        return to_records(rows, schema, locs)
    for loc, row in zip(locs, rows, strict=True):
        if not isinstance(row, list):
            raise invalid(loc, f"expected a list of {settings.input_dim} numbers "
                               "(MNEMO_INPUT_DIM); records need a schema (MNEMO_FEATURES)")
    return to_matrix(rows, settings.input_dim, locs)  # type: ignore[arg-type]


def to_records(rows: Sequence[object], schema: FeatureSchema, locs: list[Loc]) -> RecordRows:
    """Each row checked against the schema (models/features.py), with its stored form."""
    records, stored = [], []
    for loc, row in zip(locs, rows, strict=True):
        if not isinstance(row, dict):
            raise invalid(loc, "expected a record: an object of the fields of MNEMO_FEATURES ("
                               f"{', '.join(f.name for f in schema.fields)})")
        try:
            record = schema.check(row)
        except RecordError as exc:
            raise invalid(loc if exc.field is None else (*loc, exc.field), str(exc)) from None
        records.append(record)
        stored.append(record_to_bytes(record))
    return RecordRows(records, stored)


def to_matrix(rows: list[list[float]], dim: int, locs: list[Loc]) -> np.ndarray:
    """Rows → float32 matrix; every row exactly `dim` finite numbers within float32 range.
    `locs[i]` names row i in an error."""
    try:  # one conversion for the whole batch; ragged rows fail it and are found below
        wide = np.asarray(rows, dtype=np.float64)
    except ValueError:
        wide = None
    if wide is None or wide.shape != (len(rows), dim):
        for loc, row in zip(locs, rows, strict=True):
            if len(row) != dim:
                raise invalid(loc, f"expected exactly {dim} numbers (MNEMO_INPUT_DIM), "
                                   f"got {len(row)}")
        wide = np.asarray(rows, dtype=np.float64).reshape(len(rows), dim)
    if wide.size and not np.abs(wide).max() <= FLOAT32_MAX:  # one test: NaN, ±inf, range
        bad = ~np.isfinite(wide) | (np.abs(wide) > FLOAT32_MAX)
        row, col = (int(i) for i in np.argwhere(bad)[0])
        value = wide[row, col]
        reason = "not finite" if not np.isfinite(value) else "outside the float32 range"
        raise invalid((*locs[row], col), f"number {float(value)!r} is {reason}")
    return wide.astype(np.float32)


def check_label(label: str | int, settings: Settings, loc: Loc) -> str:
    """The label as stored text, refusing the deployment's other label type."""
    if settings.label_type == "int" and not isinstance(label, int):
        raise invalid(loc, "label must be an integer (MNEMO_LABEL_TYPE=int)")
    if settings.label_type == "str" and not isinstance(label, str):
        raise invalid(loc, "label must be a string (MNEMO_LABEL_TYPE=str)")
    return str(label)
