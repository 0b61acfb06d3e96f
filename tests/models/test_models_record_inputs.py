"""Records' networks standardise their numeric value columns only (one-hot and indicator columns
pass as they are), and the drift response's locality test copes with repeated, discrete inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models.adaptation import contradicted, new_concept_model
from models.checkpoint import model_from_bytes, model_to_bytes
from models.features import FeatureSchema
from models.nets import MLPConfig, Standardizer, build_model
from service.config import (
    RECORDS_CONSOLIDATE_EVERY,
    RECORDS_LEARNING_RATE,
    VECTORS_CONSOLIDATE_EVERY,
    VECTORS_LEARNING_RATE,
    Settings,
    load_settings,
)
from service.serving.fast_forward import checked_forward
from service.versioning import initial_version
from service.worker.state import new_learner, restore, stream_params

SCHEMA = {"amount": "numeric", "flag": "boolean",
          "colour": {"kind": "categorical", "max_categories": 3, "buckets": 2}}


def test_value_columns_are_the_numeric_values() -> None:
    schema = FeatureSchema.from_mapping(SCHEMA)
    assert schema.width == 2 + 2 + 6
    assert schema.value_columns() == (0,)
    assert FeatureSchema.from_mapping({"c": "categorical", "n": "numeric"}).value_columns() == (289,)


def test_passed_columns_are_left_exactly_as_they_are() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen) * 3 + 2
    x[:, 1:] = (x[:, 1:] > 3).float()  # indicators, one of them rare
    x[:, 4] = 0.0  # a slot never hit while training
    st = Standardizer(5, scaled=(0,))
    st.update(x)
    probe = torch.tensor([[2.0, 1.0, 0.0, 1.0, 1.0]])
    out = st(probe)
    assert torch.equal(out[:, 1:], probe[:, 1:])  # not ±10 for a rare or unseen column
    assert out[0, 0].item() == pytest.approx((2.0 - x[:, 0].double().mean().item())
                                             / math.sqrt(x[:, 0].double().var(unbiased=False).item()
                                                         + 1e-5), rel=1e-4)
    full = Standardizer(5)
    full.update(x)
    assert torch.equal(full(probe)[:, 0], out[:, 0])  # the scaled column as before
    assert full(probe)[0, 4].item() == 10.0  # what the mask avoids: an unseen slot at the clip


def test_vector_models_are_unchanged() -> None:
    config = MLPConfig(6, (8,), 3)
    assert "scaled_columns" not in config.to_dict()
    st = build_model(config).standardizer
    assert st.scaled is None and "passed" not in dict(st.named_buffers())
    assert set(st.state_dict()) == {"count", "mean", "m2"}


def test_config_round_trips_and_checkpoints_load_either_way() -> None:
    config = MLPConfig(6, (8,), 2, scaled_columns=(0, 3))
    assert MLPConfig.from_dict(config.to_dict()) == config
    model = build_model(config, seed=0)
    model.standardizer.update(torch.randn(64, 6) * 4)
    x = torch.randn(5, 6)
    loaded, _ = model_from_bytes(model_to_bytes(model, {}))
    assert loaded.config == config and torch.equal(loaded(x), model(x))
    rebound, _ = model_from_bytes(model_to_bytes(model, {}), template=loaded)  # models/rebind.py
    assert torch.equal(rebound(x), model(x))
    fast = checked_forward(loaded, x)  # the serving fast path reads the same buffers
    assert fast is not None and torch.equal(fast(x), model(x))
    # The state dict has the same keys with or without the mask: older blobs still load.
    plain = build_model(MLPConfig(6, (8,), 2))
    plain.load_state_dict(model.state_dict())
    with pytest.raises(ValueError):
        MLPConfig(6, (8,), 2, scaled_columns=(3, 0))
    with pytest.raises(ValueError):
        MLPConfig(6, (8,), 2, scaled_columns=(6,))


def test_record_networks_scale_the_numeric_values_only_from_version_0_on() -> None:
    settings = Settings(features=SCHEMA, labels=["a", "b"])
    assert settings.network(2).scaled_columns == (0,)
    _, weights = initial_version(settings)
    assert model_from_bytes(weights)[0].config.scaled_columns == (0,)  # what the API serves
    learner, _, _ = restore(settings, weights, None)
    assert learner.model.config.scaled_columns == (0,)
    vectors = Settings(input_dim=6)
    assert new_learner(vectors, vectors.network(2)).model.config.scaled_columns is None
    # Progressive columns and soft copies keep standardisers of their own, over every column.
    for other in (Settings(features=SCHEMA, strategy="progressive"),
                  Settings(features=SCHEMA, heads="soft")):
        assert other.network(2).scaled_columns is None


def _cells(n: int, gen: torch.Generator) -> torch.Tensor:
    """One-hot rows of two 3-valued fields (9 distinct inputs), many copies of each."""
    a, b = torch.randint(3, (n,), generator=gen), torch.randint(3, (n,), generator=gen)
    x = torch.zeros(n, 6)
    x[torch.arange(n), a] = 1.0
    x[torch.arange(n), 3 + b] = 1.0
    return x


def test_discrete_inputs_the_recent_window_misses_are_still_near() -> None:
    gen = torch.Generator().manual_seed(0)
    buffer_x = _cells(600, gen)
    old = buffer_x[:, 0].long()  # old concept: field a is its first value
    recent_x = buffer_x.new_zeros(12, 6)
    # The recent window shows 3 of the 9 inputs only, under the new concept (field b's first).
    for i in range(12):
        recent_x[i, i % 3] = 1.0
        recent_x[i, 3 + (i % 3)] = 1.0
    recent_y = recent_x[:, 3].long()
    new_y = buffer_x[:, 3].long()
    model = build_model(MLPConfig(6, (16,), 2, scaled_columns=()), seed=0)
    model.standardizer.update(buffer_x)
    fitted = new_concept_model(model, torch.cat([buffer_x, recent_x]),
                               torch.cat([new_y, recent_y]), steps=300)
    mask = contradicted(fitted, buffer_x, old, recent_x, recent_y)
    wrong = old != new_y
    unseen = ~(buffer_x[:, :3].argmax(1) == buffer_x[:, 3:].argmax(1))  # inputs not in the window
    # Contradicted copies of inputs the window never showed are retired too, nothing else.
    assert bool(mask[wrong & unseen].float().mean() > 0.9)
    assert not bool(mask[~wrong].any())


def test_records_default_learning_rate_yields_to_an_explicit_one() -> None:
    records = load_settings({"MNEMO_FEATURES": json.dumps(SCHEMA)})
    assert records.effective_learning_rate == RECORDS_LEARNING_RATE
    assert records.hyperparameters()["learning_rate"] == RECORDS_LEARNING_RATE  # as recorded
    assert new_learner(records, records.network(2)).lr == RECORDS_LEARNING_RATE
    explicit = load_settings({"MNEMO_FEATURES": json.dumps(SCHEMA), "MNEMO_LEARNING_RATE": "0.002"})
    assert explicit.effective_learning_rate == 0.002
    assert load_settings({}).effective_learning_rate == VECTORS_LEARNING_RATE == 2e-3


def test_records_consolidate_more_often_unless_told_otherwise() -> None:
    records = load_settings({"MNEMO_FEATURES": json.dumps(SCHEMA)})
    assert records.effective_consolidate_every == RECORDS_CONSOLIDATE_EVERY == 250
    assert records.hyperparameters()["consolidate_every_samples"] == 250  # as recorded
    assert stream_params(records).consolidate_every == 250  # as the learner runs it
    explicit = load_settings({"MNEMO_FEATURES": json.dumps(SCHEMA),
                              "MNEMO_CONSOLIDATE_EVERY_SAMPLES": "1000"})
    assert stream_params(explicit).consolidate_every == 1000
    vectors = load_settings({})
    assert stream_params(vectors).consolidate_every == VECTORS_CONSOLIDATE_EVERY == 1000


@pytest.mark.parametrize("switch", [{"heads": "per-tag"}, {"heads": "soft"},
                                    {"strategy": "progressive"}])
def test_a_record_deployment_switched_to_tag_heads_restores(switch: dict[str, str]) -> None:
    settings = Settings(features=SCHEMA, **switch)
    shared = Settings(features=SCHEMA)
    model = new_learner(shared, shared.network(2)).model
    blob = model_to_bytes(model, {})
    learner, _, _ = restore(settings, blob, None)
    keeps_mask = switch == {"heads": "per-tag"}  # columns and soft copies scale every column
    assert learner.model.config.scaled_columns == ((0,) if keeps_mask else None)
