"""MNEMO_PRECISION: how `auto` resolves per device and model (a pure function, so the CUDA
branches are tested here without a GPU), and that the learner is built with it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from models.checkpoint import tensors_to_bytes
from models.nets import MLPConfig
from service.config import Settings
from service.versioning import initial_version
from service.worker.state import AUTO_BF16_MIN_WIDTH, resolve_precision, restore

SMALL = MLPConfig(64, (128, 128), 10)  # the default MLP: launch-bound on a GPU
WIDE = MLPConfig(784, (AUTO_BF16_MIN_WIDTH, AUTO_BF16_MIN_WIDTH), 100)
NARROWER = MLPConfig(784, (AUTO_BF16_MIN_WIDTH - 1, 1024), 100)
# Progressive columns after the first may be wider than MNEMO_HIDDEN: the widest layer counts.
WIDE_COLUMNS = MLPConfig(16, (64,), 2, tag_heads=(), progressive=True,
                         column_hidden=(AUTO_BF16_MIN_WIDTH,))


@pytest.mark.parametrize(
    ("setting", "device", "config", "supported", "expected"),
    [
        ("auto", "cpu", WIDE, True, "fp32"),  # CPU: always fp32 under auto
        ("auto", "cpu", SMALL, False, "fp32"),
        ("auto", "cuda", SMALL, True, "fp32"),  # too small to gain from bf16
        ("auto", "cuda", NARROWER, True, "fp32"),
        ("auto", "cuda", WIDE, True, "bf16"),
        ("auto", "cuda:1", WIDE, True, "bf16"),
        ("auto", "cuda", WIDE_COLUMNS, True, "bf16"),
        ("auto", "cuda", WIDE, False, "fp32"),  # no bf16 on this GPU
        ("fp32", "cuda", WIDE, True, "fp32"),
        ("bf16", "cpu", SMALL, False, "bf16"),  # explicit: honoured, even where it is slower
        ("bf16", "cuda", SMALL, True, "bf16"),
    ],
)
def test_resolve_precision(setting: str, device: str, config: MLPConfig, supported: bool,
                           expected: str) -> None:
    assert resolve_precision(setting, device, config, bf16_supported=supported) == expected


def test_explicit_bf16_on_a_gpu_without_it_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="MNEMO_PRECISION=bf16"):
        resolve_precision("bf16", "cuda", SMALL, bf16_supported=False)
    with pytest.raises(ValueError, match="MNEMO_PRECISION"):
        resolve_precision("fp16", "cpu", SMALL, bf16_supported=False)


def test_restored_learner_gets_the_resolved_precision(
    settings_for: Callable[..., Settings],
) -> None:
    auto = settings_for(device="cpu")
    assert auto.precision == "auto"
    _, weights = initial_version(auto)
    learner, _, _ = restore(auto, weights, None)
    assert (learner.device.type, learner.precision) == ("cpu", "fp32")
    bf16 = settings_for(device="cpu", precision="bf16")
    fresh, _, _ = restore(bf16, weights, None)
    assert fresh.precision == "bf16"
    state = tensors_to_bytes(fresh.state_dict(), fresh.meta())
    resumed, _, _ = restore(bf16, weights, state)  # from a saved learner state too
    assert resumed.precision == "bf16"
    assert restore(auto, weights, state)[0].precision == "fp32"
