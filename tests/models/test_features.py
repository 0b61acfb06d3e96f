"""Records as inputs (models/features.py): the schema, record checks, the encoder's layout, its
bounded vocabularies and the state a version carries."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from models.checkpoint import (
    CheckpointError,
    encoder_from_metadata,
    features_metadata,
    model_from_bytes,
    model_to_bytes,
)
from models.features import (
    FeatureSchema,
    RecordEncoder,
    RecordError,
    SchemaError,
    record_from_bytes,
    record_to_bytes,
)
from models.nets import MLPConfig, build_model

SCHEMA = {"amount": "numeric", "country": {"kind": "categorical", "max_categories": 3,
                                            "buckets": 2}, "mobile": "boolean"}


def encoder() -> RecordEncoder:
    return RecordEncoder(FeatureSchema.from_mapping(SCHEMA))


def test_the_schema_lays_out_a_fixed_block_per_field() -> None:
    schema = FeatureSchema.from_mapping(SCHEMA)
    # numeric [value, missing], categorical 3 slots + 2 buckets + missing, boolean [value, missing]
    assert schema.width == 2 + 6 + 2
    assert schema.to_mapping()["country"] == {"kind": "categorical", "required": False,
                                              "max_categories": 3, "buckets": 2}
    assert FeatureSchema.from_mapping(schema.to_mapping()) == schema  # the full form round-trips


@pytest.mark.parametrize(("mapping", "names"), [
    ({"a": "number"}, "'a': kind 'number'"),
    ({"a": {"kind": "numeric", "buckets": 3}}, "'a': max_categories and buckets apply"),
    ({"a": {"kind": "categorical", "max_categories": -1}}, "'a': max_categories must be"),
    ({"a": {"kind": "categorical", "size": 3}}, "'a': unknown key(s) ['size']"),
    ({"a": {"kind": "boolean", "required": "yes"}}, "'a': required must be true or false"),
    ({"9a": "numeric"}, "field name '9a'"),
    ({}, "expected a JSON object"),
])
def test_a_bad_schema_names_the_field(mapping: dict, names: str) -> None:
    with pytest.raises(SchemaError, match=None) as raised:
        FeatureSchema.from_mapping(mapping)
    assert names in str(raised.value)


@pytest.mark.parametrize(("record", "field", "says"), [
    ({"amount": "12"}, "amount", "numeric: expected a number, got str"),
    ({"amount": True}, "amount", "numeric: expected a number, got bool"),
    ({"amount": float("inf")}, "amount", "not a finite number"),
    ({"country": 7}, "country", "categorical: expected a string, got int"),
    ({"country": "x" * 257}, "country", "at most 256 characters"),
    ({"mobile": 1}, "mobile", "boolean: expected true or false, got int"),
    ({"colour": "red"}, "colour", "unknown field 'colour'"),
])
def test_a_record_that_does_not_fit_names_its_field(record: dict, field: str, says: str) -> None:
    with pytest.raises(RecordError) as raised:
        FeatureSchema.from_mapping(SCHEMA).check(record)
    assert raised.value.field == field and says in str(raised.value)


def test_a_required_field_must_be_present_and_null_is_missing() -> None:
    schema = FeatureSchema.from_mapping({"a": {"kind": "numeric", "required": True},
                                         "b": "categorical"})
    assert schema.check({"a": 1, "b": None}) == {"a": 1.0}
    with pytest.raises(RecordError) as raised:
        schema.check({"b": "x"})
    assert raised.value.field == "a" and "required" in str(raised.value)


def test_encoding_sets_each_fields_columns() -> None:
    enc = encoder()
    enc.observe([{"country": "FR"}, {"country": "DE"}])
    x = enc.encode([{"amount": 2.5, "country": "DE", "mobile": True}, {}])
    assert x.dtype == np.float32 and x.shape == (2, 10)
    assert x[0].tolist() == [2.5, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert x[1].tolist() == [0, 1, 0, 0, 0, 0, 0, 1, 0, 1]  # every field missing


def test_unseen_values_hash_into_buckets_and_encode_never_grows() -> None:
    enc = encoder()
    row = enc.encode([{"country": "JP"}])[0]
    assert row[2:5].sum() == 0 and row[5:7].sum() == 1  # a bucket, not a slot
    assert enc.vocabulary("country") == []  # encode read the vocabulary, never grew it
    assert enc.observe([{"country": "JP"}]) == 1
    assert enc.encode([{"country": "JP"}])[0][2] == 1  # now its own slot, for good


def test_vocabularies_stop_at_their_bound_and_memory_stays_fixed() -> None:
    schema = FeatureSchema.from_mapping({"city": {"kind": "categorical", "max_categories": 1000,
                                                  "buckets": 64}})
    enc = RecordEncoder(schema)
    values = [f"city-{i}" for i in range(100_000)]
    tracemalloc.start()
    for start in range(0, len(values), 5_000):  # as the learner sees them: read by read
        enc.observe([{"city": v} for v in values[start : start + 5_000]])
    state_size = len(enc.state_json())
    before = tracemalloc.take_snapshot()
    enc.observe([{"city": f"more-{i}"} for i in range(10_000)])
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename")
                if s.size_diff > 0 and "features.py" in str(s.traceback))
    tracemalloc.stop()
    assert enc.vocabulary("city") == values[:1000]  # first seen, first slotted; then no more
    # Past the bound new values cost the encoder nothing (10,000 kept would take ~1 MB).
    assert grown < 1024
    assert len(enc.state_json()) == state_size < 20 * 1000  # the state a version carries
    x = enc.encode([{"city": v} for v in values[-2_000:]])
    assert x.shape == (2_000, schema.width) and (x.sum(axis=1) == 1).all()
    assert (x[:, :1000].sum() == 0) and len(np.unique(x.argmax(axis=1))) == 64  # all hashed


def test_state_round_trips_to_identical_encodings() -> None:
    enc = encoder()
    enc.observe([{"country": "FR"}, {"country": "DE"}])
    records = [{"amount": 1.5, "country": c, "mobile": m} for c in ("FR", "DE", "NL", "JP")
               for m in (True, False)]
    again = RecordEncoder.from_json(enc.state_json())
    assert again.state() == enc.state()
    assert enc.encode(records).tobytes() == again.encode(records).tobytes()


def test_the_hashed_bucket_does_not_depend_on_the_process() -> None:
    # Python's own str hash is salted per process; the encoder's must not be.
    code = ("from models.features import FeatureSchema, RecordEncoder;"
            "s = FeatureSchema.from_mapping({'c': {'kind': 'categorical', 'max_categories': 0,"
            " 'buckets': 97}});"
            "print(RecordEncoder(s).encode([{'c': 'v%d' % i} for i in range(50)]).argmax(1).tolist())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1
    enc = RecordEncoder(FeatureSchema.from_mapping({"c": {"kind": "categorical",
                                                          "max_categories": 0, "buckets": 97}}))
    assert json.loads(outputs.pop()) == enc.encode(
        [{"c": f"v{i}"} for i in range(50)]).argmax(1).tolist()
    other_seed = RecordEncoder(enc.schema, hash_seed=1)
    assert other_seed.encode([{"c": f"v{i}"} for i in range(50)]).argmax(1).tolist() != \
        enc.encode([{"c": f"v{i}"} for i in range(50)]).argmax(1).tolist()


def test_stored_records_are_canonical_json() -> None:
    record = FeatureSchema.from_mapping(SCHEMA).check({"mobile": False, "country": "ÉIRE",
                                                       "amount": 3})
    blob = record_to_bytes(record)
    assert blob == '{"amount":3.0,"country":"ÉIRE","mobile":false}'.encode()
    assert record_from_bytes(blob) == record


def test_weights_carry_the_encoder() -> None:
    enc = encoder()
    enc.observe([{"country": "FR"}])
    blob = model_to_bytes(build_model(MLPConfig(10, (8,), 2)), features_metadata(enc))
    _, metadata = model_from_bytes(blob)
    assert encoder_from_metadata(metadata).state() == enc.state()  # type: ignore[union-attr]
    assert encoder_from_metadata({}) is None  # a vector model
    with pytest.raises(CheckpointError, match="feature encoder"):
        encoder_from_metadata({"features": '{"format": 99}'})


def test_a_schema_loads_from_a_mapping_its_json_or_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    expected = FeatureSchema.from_mapping(SCHEMA)
    path = tmp_path / "features.json"
    path.write_text(json.dumps(SCHEMA))
    assert FeatureSchema.load(SCHEMA) == FeatureSchema.load(json.dumps(SCHEMA)) == expected
    assert FeatureSchema.load(str(path)) == FeatureSchema.load(path) == expected
    path.write_text('{"a": "text"}')
    with pytest.raises(SchemaError, match=f"{path}: field 'a': kind 'text'"):
        FeatureSchema.load(str(path))
    with pytest.raises(SchemaError, match="neither a JSON object nor a readable file"):
        FeatureSchema.load(str(tmp_path / "absent.json"))
