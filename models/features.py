"""Records as model inputs: a feature schema (MNEMO_FEATURES) and the encoder that turns records
into the fixed-width float vectors the networks read.

A record is a mapping from field name to value: numbers for `numeric` fields, strings for
`categorical` ones, true/false for `boolean` ones; an absent field (or null) is a missing value.
Each field owns a fixed block of the encoded vector, so the network's input width never changes
while vocabularies grow:

- numeric: [value, missing] — the network's own standardiser scales the value online;
- boolean: [1 or 0, missing];
- categorical: one column per vocabulary slot (at most `max_categories`), then `buckets`
  hashed columns, then [missing]. A value the vocabulary holds sets its slot; any other value
  sets the bucket a keyed hash of it picks: past the bound (memory stays fixed however many
  values the stream brings) and for values this vocabulary has not seen yet.

Vocabularies grow only through `observe` (the learner, on the labelled records it learns from),
in order of first sight and never reordered, so a value keeps its column for good and every row
the learner encoded stays valid. `encode` is pure: the API encodes with the vocabularies of the
version it serves (they travel in the version's weights, `state()`), the learner with its own;
the same state encodes the same record to the same bits. Pure Python and numpy: nothing here
knows about HTTP or Redis.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NUMERIC, CATEGORICAL, BOOLEAN = "numeric", "categorical", "boolean"
KINDS = (NUMERIC, CATEGORICAL, BOOLEAN)
DEFAULT_MAX_CATEGORIES = 256
DEFAULT_BUCKETS = 32
MAX_FIELDS = 1024
MAX_CATEGORY_LENGTH = 256  # characters of one categorical value
MAX_CATEGORY_SLOTS = 65_536  # max_categories + buckets of one field
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
FLOAT32_MAX = 3.4028234663852886e38
STATE_FORMAT = 1
BUCKET_CACHE_SIZE = 65_536  # cached (field, value) -> hashed bucket entries per encoder
Record = dict[str, float | str | bool]  # a checked record: present fields only


class SchemaError(ValueError):
    """MNEMO_FEATURES is not a valid schema; the message names the field."""


class RecordError(ValueError):
    """A record does not fit the schema: `field` names the field (None: the record itself)."""

    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    required: bool = False
    max_categories: int = DEFAULT_MAX_CATEGORIES  # categorical only
    buckets: int = DEFAULT_BUCKETS  # categorical only

    @property
    def width(self) -> int:
        """Columns of the encoded vector this field owns."""
        return self.max_categories + self.buckets + 1 if self.kind == CATEGORICAL else 2

    def to_mapping(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "required": self.required}
        if self.kind == CATEGORICAL:
            spec |= {"max_categories": self.max_categories, "buckets": self.buckets}
        return spec


def _field_spec(name: str, spec: object) -> FieldSpec:
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
        raise SchemaError(f"field name {name!r}: 1-64 characters, a letter or _ first, then "
                          "letters, digits, _ . or -")
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise SchemaError(f"field {name!r}: expected a kind ({', '.join(KINDS)}) or an object "
                          "with one, e.g. {\"kind\": \"categorical\", \"max_categories\": 50}")
    unknown = set(spec) - {"kind", "required", "max_categories", "buckets"}
    if unknown:
        raise SchemaError(f"field {name!r}: unknown key(s) {sorted(unknown)}; known: kind, "
                          "required, max_categories, buckets")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise SchemaError(f"field {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise SchemaError(f"field {name!r}: required must be true or false")
    if kind != CATEGORICAL and ({"max_categories", "buckets"} & set(spec)):
        raise SchemaError(f"field {name!r}: max_categories and buckets apply to categorical "
                          "fields only")
    max_categories = spec.get("max_categories", DEFAULT_MAX_CATEGORIES)
    buckets = spec.get("buckets", DEFAULT_BUCKETS)
    for key, value, low in (("max_categories", max_categories, 0), ("buckets", buckets, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SchemaError(f"field {name!r}: {key} must be an integer >= {low}")
    if max_categories + buckets > MAX_CATEGORY_SLOTS:
        raise SchemaError(f"field {name!r}: max_categories + buckets must be at most "
                          f"{MAX_CATEGORY_SLOTS}")
    return FieldSpec(name, kind, required, max_categories, buckets)


@dataclass(frozen=True)
class FeatureSchema:
    """The fields a record may carry, in the order their blocks are laid out."""

    fields: tuple[FieldSpec, ...]
    _by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    @classmethod
    def from_mapping(cls, mapping: object) -> FeatureSchema:
        if not isinstance(mapping, Mapping) or not mapping:
            raise SchemaError("expected a JSON object mapping each field's name to its kind, e.g. "
                              "{\"amount\": \"numeric\", \"country\": \"categorical\"}")
        if len(mapping) > MAX_FIELDS:
            raise SchemaError(f"at most {MAX_FIELDS} fields, got {len(mapping)}")
        return cls(tuple(_field_spec(name, spec) for name, spec in mapping.items()))

    @classmethod
    def parse(cls, text: str) -> FeatureSchema:
        try:
            return cls.from_mapping(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"not JSON ({exc.msg})") from None

    @classmethod
    def load(cls, value: object) -> FeatureSchema:
        """MNEMO_FEATURES's value: a mapping, its JSON, or the path of a file holding that JSON."""
        if isinstance(value, FeatureSchema):
            return value
        if isinstance(value, Path) or (isinstance(value, str)
                                       and not value.lstrip().startswith(("{", "["))):
            try:
                text = Path(value).read_text(encoding="utf-8")
            except OSError as exc:
                raise SchemaError(f"{value} is neither a JSON object nor a readable file "
                                  f"({exc.strerror})") from None
            try:
                return cls.parse(text)
            except SchemaError as exc:
                raise SchemaError(f"{value}: {exc}") from None
        if isinstance(value, str):
            return cls.parse(value)
        return cls.from_mapping(value)

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """Every field in its full form: what a version records and exports."""
        return {f.name: f.to_mapping() for f in self.fields}

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields)

    def value_columns(self) -> tuple[int, ...]:
        """The encoded columns that hold numeric values (the first of each numeric field's
        block); every other column is a 0/1 indicator (boolean, one-hot, missing)."""
        out, offset = [], 0
        for spec in self.fields:
            if spec.kind == NUMERIC:
                out.append(offset)
            offset += spec.width
        return tuple(out)

    def __getitem__(self, name: str) -> FieldSpec:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def check(self, record: object) -> Record:
        """The record with only its present fields, values as stored; RecordError names the
        first field that does not fit (an unknown one, a wrong type, a required one absent)."""
        if not isinstance(record, Mapping):
            raise RecordError(None, "expected an object mapping field names to values")
        by_name = self._by_name
        out: Record = {}
        for name, value in record.items():
            spec = by_name.get(name)
            if spec is None:
                raise RecordError(name, f"unknown field {name!r}; the schema (MNEMO_FEATURES) "
                                        f"has {', '.join(by_name)}")
            if value is None:
                continue
            # Fast paths for exact types whose checks pass; every other value (subclasses,
            # out of range, wrong type) takes _checked_value, which decides as before.
            kind, kind_of_value = spec.kind, type(value)
            if kind == NUMERIC:
                if ((kind_of_value is float or kind_of_value is int)
                        and -FLOAT32_MAX <= value <= FLOAT32_MAX):
                    out[name] = float(value)
                    continue
            elif kind == BOOLEAN:
                if kind_of_value is bool:
                    out[name] = value
                    continue
            elif kind_of_value is str and len(value) <= MAX_CATEGORY_LENGTH:
                out[name] = value
                continue
            out[name] = _checked_value(spec, value)
        for spec in self.fields:
            if spec.required and spec.name not in out:
                raise RecordError(spec.name, f"field {spec.name!r} is required")
        return out


def _checked_value(spec: FieldSpec, value: object) -> float | str | bool:
    if spec.kind == NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(spec.name, f"field {spec.name!r} is numeric: expected a number, "
                                         f"got {type(value).__name__}")
        number = float(value)
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise RecordError(spec.name, f"field {spec.name!r}: {number!r} is not a finite "
                                         "number within the float32 range")
        return number
    if spec.kind == BOOLEAN:
        if not isinstance(value, bool):
            raise RecordError(spec.name, f"field {spec.name!r} is boolean: expected true or "
                                         f"false, got {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise RecordError(spec.name, f"field {spec.name!r} is categorical: expected a string, "
                                     f"got {type(value).__name__}")
    if len(value) > MAX_CATEGORY_LENGTH:
        raise RecordError(spec.name, f"field {spec.name!r}: values are at most "
                                     f"{MAX_CATEGORY_LENGTH} characters, got {len(value)}")
    return value


# One encoder for every record: json.dumps with non-default arguments builds a new one per call
# (measured 6.4 -> 4.0 µs a record, the same bytes).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_to_bytes(record: Record) -> bytes:
    """A checked record's stored form: canonical JSON (sorted keys, no spaces)."""
    return _CANONICAL.encode(record).encode()


def record_from_bytes(blob: bytes) -> Record:
    value = json.loads(blob)
    if not isinstance(value, dict):
        raise ValueError("a stored record is a JSON object")
    return value


class RecordEncoder:
    """Records → float32 rows under a schema, with a bounded vocabulary per categorical field.

    The vocabularies and the hashing seed are the encoder's state: `state()` / `from_state`
    carry them inside a version, so every process that loads the version encodes alike."""

    def __init__(self, schema: FeatureSchema, vocabularies: Mapping[str, Sequence[str]] | None = None,
                 hash_seed: int = 0) -> None:
        self.schema = schema
        self.hash_seed = int(hash_seed)
        self._key = self.hash_seed.to_bytes(8, "little", signed=False)
        self._slots: dict[str, dict[str, int]] = {}
        # (field, value) -> bucket of values outside the vocabulary: a pure function of the
        # value, the field's bucket count and the seed, so a cache; bounded (cleared when full).
        self._buckets: dict[tuple[str, str], int] = {}
        self._offsets: dict[str, int] = {}
        offset = 0
        for spec in schema.fields:
            self._offsets[spec.name] = offset
            offset += spec.width
            if spec.kind == CATEGORICAL:
                self._slots[spec.name] = {}
        self._width = offset  # schema.width, which the schema (frozen) computes on each call
        for name, values in (vocabularies or {}).items():
            if name not in self._slots:
                raise ValueError(f"vocabulary for {name!r}, which is not a categorical field")
            self._grow(schema[name], values)

    @property
    def width(self) -> int:
        return self.schema.width

    def vocabulary(self, name: str) -> list[str]:
        """A categorical field's values in slot order."""
        return list(self._slots[name])

    def observe(self, records: Iterable[Record]) -> int:
        """Give every new categorical value a slot while its field has room (the learner's
        step, before it encodes what it learns from); returns how many were added."""
        added = 0
        for spec in self.schema.fields:
            if spec.kind == CATEGORICAL:
                slots = self._slots[spec.name]
                if len(slots) < spec.max_categories:
                    added += self._grow(spec, (r[spec.name] for r in records  # type: ignore[misc]
                                               if spec.name in r))
        return added

    def _grow(self, spec: FieldSpec, values: Iterable[str]) -> int:
        slots, added = self._slots[spec.name], 0
        for value in values:
            if len(slots) >= spec.max_categories:
                break
            if value not in slots:
                slots[value] = len(slots)
                added += 1
        return added

    def bucket(self, spec: FieldSpec, value: str) -> int:
        """The hashed column (within the field's buckets) of a value outside the vocabulary."""
        digest = hashlib.blake2b(value.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "little") % spec.buckets

    def column(self, spec: FieldSpec, value: str | None) -> int:
        """The column within a categorical field's block that a value (None: missing) sets."""
        if value is None:
            return spec.max_categories + spec.buckets
        slot = self._slots[spec.name].get(value)
        if slot is not None:
            return slot
        key = (spec.name, value)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= BUCKET_CACHE_SIZE:
                self._buckets.clear()
            bucket = self._buckets[key] = self.bucket(spec, value)
        return spec.max_categories + bucket

    def encode(self, records: Sequence[Record]) -> np.ndarray:
        """float32 (len(records), width); pure: the vocabularies are read, never grown."""
        width = self._width
        out = np.zeros((len(records), width), dtype=np.float32)
        # Every set cell's flat position and value gathered, then set by one `put` (each cell
        # belongs to one field, so none is set twice; float64 values round to float32 as a
        # per-cell assignment does): numpy per cell costs more than the whole encoding.
        cells: list[int] = []
        values: list[float] = []
        column = self.column
        for spec in self.schema.fields:
            name, offset = spec.name, self._offsets[spec.name]
            if spec.kind == CATEGORICAL:
                for i, record in enumerate(records):
                    cells.append(i * width + offset
                                 + column(spec, record.get(name)))  # type: ignore[arg-type]
                    values.append(1.0)
                continue
            for i, record in enumerate(records):
                value = record.get(name)
                if value is None:
                    cells.append(i * width + offset + 1)
                    values.append(1.0)
                else:
                    cells.append(i * width + offset)
                    values.append(float(value))
        if cells:
            out.reshape(-1).put(cells, np.array(values, dtype=np.float64))
        return out

    def state(self) -> dict[str, Any]:
        """JSON-ready: the schema, every vocabulary in slot order and the hashing seed."""
        return {"format": STATE_FORMAT, "schema": self.schema.to_mapping(),
                "vocabularies": {name: list(slots) for name, slots in self._slots.items()},
                "hash_seed": self.hash_seed}

    def state_json(self) -> str:
        return json.dumps(self.state(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RecordEncoder:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"encoder state format {state.get('format')!r}, expected "
                             f"{STATE_FORMAT}")
        schema = FeatureSchema.from_mapping(state["schema"])
        return cls(schema, state.get("vocabularies") or {}, int(state.get("hash_seed", 0)))

    @classmethod
    def from_json(cls, text: str) -> RecordEncoder:
        return cls.from_state(json.loads(text))
