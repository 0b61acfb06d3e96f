"""Fixtures shared by the learner tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.config import Settings
from tests.worker.test_loop import LABELS, NEVER


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        # The cadence starts at publish_every_samples unless a test names its first step:
        # these tests count publishes at that size.
        values: dict[str, object] = {"labels": LABELS, "publish_every_seconds": NEVER,
                                     "max_batch": 1024, "publish_first_samples": 10**9}
        values.update(overrides)
        return make_settings(**values)

    return make


