"""Checks that depend on the deployment's settings (dimension, bounds, label type), made after
the schema has parsed the body and before anything is written."""

from __future__ import annotations

import numpy as np

from service.api.errors import invalid
from service.config import FLOAT32_MAX, Settings

Loc = tuple[str | int, ...]


def check_count(count: int, settings: Settings, loc: Loc) -> None:
    if count > settings.max_batch:
        raise invalid(loc, f"at most {settings.max_batch} per request (MNEMO_MAX_BATCH), got {count}")


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
