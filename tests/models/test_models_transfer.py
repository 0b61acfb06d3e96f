"""Transfer (models/transfer.py): a checkpoint starts a network (trunk, and the head rows of the
labels it shares with the declared ones), misfits are named, and frozen layers stay put."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save as st_save

from models.checkpoint import CheckpointError, labels_metadata, model_to_bytes
from models.learner import IncrementalLearner
from models.nets import MLPConfig
from models.strategies import STRATEGY_NAMES, make_strategy
from models.transfer import model_from_checkpoint, resolve_freeze

CONFIG = MLPConfig(8, (16, 12), 3)
LABELS = ["a", "b", "c"]


def _trained(config: MLPConfig = CONFIG, strategy: str = "naive", seed: int = 0) -> IncrementalLearner:
    learner = IncrementalLearner(config, make_strategy(strategy), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        x = torch.randn(16, config.input_dim, generator=gen) * 4 + 2
        learner.learn_many(x, torch.randint(0, config.num_classes, (16,), generator=gen))
    return learner


def _probe() -> torch.Tensor:
    return torch.randn(32, CONFIG.input_dim, generator=torch.Generator().manual_seed(7)) * 4


def test_a_checkpoint_round_trips_bit_identically() -> None:
    model = _trained().snapshot()
    blob = model_to_bytes(model, labels_metadata(LABELS))
    started = model_from_checkpoint(blob, CONFIG, LABELS).eval()
    with torch.no_grad():
        assert torch.equal(started(_probe()), model(_probe()))
    assert torch.equal(started.standardizer.mean, model.standardizer.mean)


def test_head_rows_follow_label_names_and_new_labels_start_fresh() -> None:
    model = _trained().snapshot()
    blob = model_to_bytes(model, labels_metadata(LABELS))
    # Reordered, one dropped ("a"), one new ("z").
    config = MLPConfig(8, (16, 12), 3)
    started = model_from_checkpoint(blob, config, ["c", "z", "b"])
    assert torch.equal(started.head.weight[0], model.head.weight[2])
    assert torch.equal(started.head.weight[2], model.head.weight[1])
    assert not any(torch.equal(started.head.weight[1], row) for row in model.head.weight)
    assert torch.equal(started.body[0].weight, model.body[0].weight)
    # No labels declared: the trunk alone.
    trunk = model_from_checkpoint(blob, MLPConfig(8, (16, 12), 0), [])
    assert trunk.num_classes == 0 and torch.equal(trunk.body[2].weight, model.body[2].weight)


def test_a_plain_safetensors_file_maps_rows_in_declared_order() -> None:
    model = _trained().snapshot()
    plain = st_save({k: v.contiguous() for k, v in model.state_dict().items()})
    started = model_from_checkpoint(plain, MLPConfig(8, (16, 12), 4), [*LABELS, "d"])
    assert torch.equal(started.head.weight[:3], model.head.weight)
    with pytest.raises(CheckpointError, match="3 classes and no label names, but only 2"):
        model_from_checkpoint(plain, MLPConfig(8, (16, 12), 2), LABELS[:2])


@pytest.mark.parametrize(
    ("config", "fragment"),
    [(MLPConfig(9, (16, 12), 3), r"standardizer.mean has shape \(8,\) there but \(9,\) here \(input_dim 9"),
     (MLPConfig(8, (16, 10), 3), r"body.2.weight has shape \(12, 16\) there but \(10, 16\)"),
     (MLPConfig(8, (16,), 3), "unexpected"),
     (MLPConfig(8, (16, 12, 4), 3), "missing")],
)
def test_a_misfit_names_the_tensor(config: MLPConfig, fragment: str) -> None:
    blob = model_to_bytes(_trained().snapshot(), labels_metadata(LABELS))
    with pytest.raises(CheckpointError, match=fragment):
        model_from_checkpoint(blob, config, LABELS)


def test_corrupted_and_foreign_blobs_are_refused() -> None:
    blob = bytearray(model_to_bytes(_trained().snapshot(), labels_metadata(LABELS)))
    blob[-3] ^= 0xFF
    with pytest.raises(CheckpointError, match="checksum"):
        model_from_checkpoint(bytes(blob), CONFIG, LABELS)
    with pytest.raises(CheckpointError, match="safetensors"):
        model_from_checkpoint(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json", CONFIG, LABELS)


def test_freeze_names_and_aliases() -> None:
    assert resolve_freeze(CONFIG, ["none"]) == ()
    assert resolve_freeze(CONFIG, ["trunk"]) == ("standardizer", "body.0", "body.2")
    assert resolve_freeze(CONFIG, ["head", "body"]) == ("body.0", "body.2", "head")
    with pytest.raises(ValueError, match=r"unknown layer.*body\.1.*standardizer, body\.0, body\.2, head"):
        resolve_freeze(CONFIG, ["body.1"])


# expand widens the hidden layers: the settings refuse it with a frozen trunk (tests/test_transfer.py)
@pytest.mark.parametrize("strategy", [s for s in STRATEGY_NAMES if s != "expand"])
def test_frozen_layers_do_not_move_while_the_rest_learns(strategy: str) -> None:
    learner = _trained(strategy=strategy)
    learner.freeze(["trunk"])
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    learner.ensure_classes(4)  # the head grows under a frozen trunk
    for i in range(30):
        x = torch.randn(16, 8, generator=gen) * 9 - 3  # other input statistics
        learner.learn_many(x, torch.randint(0, 4, (16,), generator=gen))
        if i % 10 == 9:
            learner.consolidate(x, torch.randint(0, 4, (16,), generator=gen))
            learner.on_publish()
    after = learner.model.state_dict()
    for name in before:
        if name.startswith(("standardizer.", "body.")):
            assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["head.weight"][:3], before["head.weight"])


def test_a_frozen_head_keeps_its_rows_and_the_trunk_learns() -> None:
    learner = _trained()
    learner.freeze(["head"])
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    gen = torch.Generator().manual_seed(4)
    for _ in range(10):
        learner.learn_many(torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen))
    after = learner.model.state_dict()
    assert torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["body.0.weight"], before["body.0.weight"])
    assert not torch.equal(after["standardizer.mean"], before["standardizer.mean"])


def test_new_labels_start_below_every_transferred_class() -> None:
    model = _trained().snapshot()
    blob = model_to_bytes(model, labels_metadata(LABELS))
    started = model_from_checkpoint(blob, CONFIG, ["c", "z", "b"])
    assert float(started.head.bias.detach()[1]) == float(model.head.bias[[1, 2]].min())
