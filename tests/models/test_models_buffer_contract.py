"""Invariants every replay buffer must keep (models/checks_buffers.py, run over each policy),
and proof that the checks catch a buffer that breaks them."""

import random

import pytest
import torch

from models.checks_buffers import check_buffer
from models.replay import BUFFER_NAMES, ReservoirBuffer, make_buffer


@pytest.mark.parametrize("name", BUFFER_NAMES)
def test_every_buffer_keeps_the_contract(name: str) -> None:
    check_buffer(lambda capacity, dim: make_buffer(name, capacity, dim))


class _IgnoresU(ReservoirBuffer):
    """Draws its own randomness: a Redis script fed the same u could not follow it."""

    def _decide(self, y: int, u: float) -> int | None:
        return super()._decide(y, random.random())


class _RetiresLoosely(ReservoirBuffer):
    """Forgets the retired items' inputs are gone: leaves them sampleable."""

    def retire(self, mask: torch.Tensor) -> int:
        return int(mask.sum())


@pytest.mark.parametrize("broken", [_IgnoresU, _RetiresLoosely])
def test_the_checks_catch_a_broken_buffer(broken: type[ReservoirBuffer]) -> None:
    with pytest.raises(AssertionError):
        check_buffer(broken)


def test_make_buffer_refuses_unknown_names_and_misplaced_options() -> None:
    with pytest.raises(ValueError, match="reservoir"):
        make_buffer("fifo", 10, 2)
    with pytest.raises(ValueError, match="recent"):
        make_buffer("reservoir", 10, 2, horizon=5)
    with pytest.raises(ValueError):
        make_buffer("recent", 10, 2, horizon=-1)
    with pytest.raises(ValueError):
        make_buffer("class-balanced", 0, 2)
    assert make_buffer("recent", 10, 2, horizon=7).horizon == 7  # type: ignore[attr-defined]
