"""The record streams of `make bench-records` (load_tests/record_streams.py), no processes: each
scenario's schema is one the service accepts, every record fits it, the streams are
deterministic and change concept where they should, and the River peers learn from records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from load_tests.record_streams import agrawal, stagger, telco_rows
from load_tests.river_peers import PEERS, run_peer
from load_tests.served_stream import scenario_settings
from service.config import load_settings


def small_stagger(seed: int):  # type: ignore[no-untyped-def]
    return stagger(seed, test_size=100, plan=((0, 300), (2, 300)))


@pytest.mark.parametrize("make", [small_stagger,
                                  lambda seed: agrawal(seed, 50, ((0, 200), (2, 200)))])
def test_every_record_fits_the_schema_the_service_is_started_with(make) -> None:  # type: ignore[no-untyped-def]
    scenario = make(0)
    settings = scenario_settings(scenario)
    assert "MNEMO_INPUT_DIM" not in settings  # derived from the schema
    schema = load_settings({"MNEMO_FEATURES": settings["MNEMO_FEATURES"]}).feature_schema
    assert schema is not None and {f.name for f in schema.fields} == set(scenario.features or {})
    for part in (*scenario.phases, *scenario.tests):
        for record in part.x:
            schema.check(record)  # raises on a record the service would refuse
    assert json.loads(settings["MNEMO_FEATURES"]) == scenario.features


def test_streams_are_deterministic_and_the_concept_changes_between_phases() -> None:
    a, b, c = small_stagger(0), small_stagger(0), small_stagger(1)
    assert a.phases[0].x == b.phases[0].x and np.array_equal(a.phases[0].y, b.phases[0].y)
    assert a.phases[0].x != c.phases[0].x
    assert a.tests[0].x == c.tests[0].x  # test sets do not depend on the seed

    def answer(scenario, phase: int) -> dict[tuple[str, ...], int]:  # type: ignore[no-untyped-def]
        part = scenario.phases[phase]
        return {tuple(sorted(r.values())): int(y) for r, y in zip(part.x, part.y, strict=True)}

    first, second = answer(a, 0), answer(a, 1)
    common = set(first) & set(second)
    # STAGGER concept 0 (small and red) and 2 (medium or large) disagree on most inputs.
    assert sum(first[k] != second[k] for k in common) >= len(common) // 3


def test_river_peers_learn_from_records() -> None:
    scenario = small_stagger(0)
    runs = {name: run_peer(make, scenario, 0) for name, make in PEERS.items()}
    assert all(len(run.correct) == 600 for run in runs.values())
    # Balanced classes: chance is 0.5, and a peer blind to the records' values stays there.
    # (HAT waits out its 200-label grace period before its first split: not within 300.)
    assert np.mean(runs["River LR"].correct[100:300]) >= 0.7
    assert np.mean(runs["River ARF"].correct[100:300]) >= 0.9


def test_the_real_table_is_the_churn_data_in_its_given_order() -> None:
    rows = telco_rows()
    assert len(rows) == 7043
    assert abs(np.mean([y for _, y in rows]) - 0.265) < 0.005
    assert sum(r["total_charges"] is None for r, _ in rows) == 11
    assert isinstance(rows[0][0]["contract"], str) and isinstance(rows[0][0]["partner"], bool)
