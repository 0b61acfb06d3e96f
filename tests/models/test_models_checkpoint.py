import json
from collections.abc import Callable

import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    model_from_bytes,
    model_to_bytes,
    tensors_from_bytes,
    tensors_to_bytes,
)
from models.nets import MLP, MLPConfig, build_model


def trained_model() -> MLP:
    m = build_model(MLPConfig(6, (8, 5), 4), seed=3)
    m.standardizer.update(torch.randn(40, 6) * 4 + 2)
    return m


def test_model_round_trip_gives_identical_outputs() -> None:
    m = trained_model()
    blob = model_to_bytes(m, {"version": "7"})
    assert blob[:8] != b"\x80\x04\x95" and b"pickle" not in blob  # plain safetensors
    loaded, md = model_from_bytes(blob)
    assert md == {"version": "7"}
    assert loaded.config == m.config
    assert not loaded.training
    x = torch.randn(9, 6) * 5
    assert torch.equal(loaded(x), m(x))
    assert all(torch.equal(a, b) for a, b in
               zip(loaded.state_dict().values(), m.state_dict().values(), strict=True))


def test_round_trip_after_head_growth_and_with_zero_classes() -> None:
    m = trained_model()
    m.grow_head(6)
    loaded, _ = model_from_bytes(model_to_bytes(m))
    assert loaded.config.num_classes == 6
    x = torch.randn(3, 6)
    assert torch.equal(loaded(x), m(x))
    empty, _ = model_from_bytes(model_to_bytes(build_model(MLPConfig(6, (4,), 0))))
    assert empty(x).shape == (3, 0)


@pytest.mark.parametrize("corrupt", [
    lambda b: b[: len(b) // 2],                      # truncated
    lambda b: b"",                                   # empty
    lambda b: b"\x00" * 64,                          # zero header
    lambda b: b[:8] + b"{not json" + b[17:],         # header garbage
    lambda b: b[:-1] + bytes([b[-1] ^ 0x01]),        # one flipped data bit
    lambda b: b[:-4] + b"\x00\x00\x80\x7f",          # a weight overwritten with inf
])
def test_corrupted_blob_raises_checkpoint_error(corrupt: Callable[[bytes], bytes]) -> None:
    blob = model_to_bytes(trained_model())
    with pytest.raises(CheckpointError):
        model_from_bytes(corrupt(blob))


def test_config_that_does_not_match_the_tensors_raises() -> None:
    m = trained_model()
    wrong = json.dumps(MLPConfig(6, (8, 5), 3).to_dict())
    with pytest.raises(CheckpointError, match="does not match"):
        model_from_bytes(tensors_to_bytes(m.state_dict(), {"config": wrong}))
    with pytest.raises(CheckpointError, match="no model config"):
        model_from_bytes(tensors_to_bytes(m.state_dict()))
    with pytest.raises(CheckpointError, match="invalid model config"):
        model_from_bytes(tensors_to_bytes(m.state_dict(), {"config": "[1, 2]"}))


def test_tensor_blob_round_trip_keeps_dtypes_shapes_and_metadata() -> None:
    tensors = {
        "w": torch.randn(3, 2),
        "count": torch.tensor(5.0, dtype=torch.float64),
        "rng": torch.Generator().manual_seed(1).get_state(),
        "empty": torch.zeros(0, 4),
        "steps": torch.tensor([3, 4]),
    }
    out, md = tensors_from_bytes(tensors_to_bytes(tensors, {"a": "b"}))
    assert md == {"a": "b"}
    assert out.keys() == tensors.keys()
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v)


def test_reserved_and_non_string_metadata_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        model_to_bytes(trained_model(), {"config": "x"})
    with pytest.raises(TypeError):
        tensors_to_bytes({"a": torch.zeros(1)}, {"n": 3})  # type: ignore[dict-item]
