"""Fixtures for every learning-core test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models: a second intra-op thread only contends with the other test processes
    # (measured: the adaptation tests took 23 s with 2 threads on a busy 2-core box, 1.4 s with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
