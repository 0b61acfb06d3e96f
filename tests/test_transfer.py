"""Transfer through the service: an exported version (GET /v1/versions/{v}/weights) is a valid
MNEMO_INIT_CHECKPOINT that starts another deployment's version 0 bit-identically; MNEMO_FREEZE
holds across training and restarts; a misfit stops start-up naming the setting (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import torch

from models.checkpoint import model_from_bytes, tensors_from_bytes, tensors_to_bytes
from service.config import Settings, SettingsError, load_settings
from service.worker.state import restore
from tests.conftest import REDIS_URL, delete_model_keys, running_app
from tests.publishing import open_store, publish_learned

ROOT = Path(__file__).resolve().parents[1]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [-3.0, 40.0, 0.0, 7.5]]


def _train(learner: object, seed: int, steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=gen) * 3 + 5
    y = torch.randint(0, learner.num_classes, (64,), generator=gen)  # type: ignore[attr-defined]
    for _ in range(steps):
        learner.learn_many(x, y)  # type: ignore[attr-defined]


async def _export_learned(settings: Settings, path: Path) -> list[str]:
    """Deployment A: a fourth label arrives, a learned version 1 is published and exported."""
    async with open_store(settings.model_name) as (registry, scripts, keys), \
            running_app(settings) as c:
        item = {"inputs": ROWS[3], "label": "hybrid"}
        assert (await c.post("/v1/feedback", json={"items": [item]})).status_code == 202
        vocab = await registry.labels()
        learner, _, _ = restore(settings, await registry.weights(0), None)
        learner.ensure_classes(len(vocab))
        _train(learner, seed=1)
        version, _ = await publish_learned(settings, registry, scripts, keys, learner, vocab,
                                           samples_seen=64)
        exported = await c.get(f"/v1/versions/{version}/weights")
        assert exported.status_code == 200
        path.write_bytes(exported.content)
        return vocab


@pytest.fixture
def other_model(redis_client: redis.Redis) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name  # type: ignore[misc]
    delete_model_keys(redis_client, name)


async def test_an_export_starts_another_deployment_bit_identically(
    make_settings: Callable[..., Settings], other_model: str, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "v1.safetensors"
    vocab = await _export_learned(make_settings(), checkpoint)
    exported, _ = model_from_bytes(checkpoint.read_bytes())

    # Deployment B declares A's labels in another order, plus one of its own.
    labels = ["hybrid", *vocab[:3][::-1], "new"]
    settings = make_settings(model_name=other_model, labels=labels, init_checkpoint=checkpoint,
                             freeze=["trunk"])
    async with running_app(settings) as c:
        v0 = (await c.get("/v1/versions/0")).json()
        assert v0["labels"] == labels
        assert v0["transfer"] == {"init_checkpoint": str(checkpoint), "freeze": ["trunk"]}
        served = (await c.post("/v1/predict", json={"inputs": ROWS})).json()
        assert served["model_version"] == 0 and served["labels"] == labels
        weights = (await c.get("/v1/versions/0/weights")).content

    # The learner B starts from version 0 predicts exactly what A's version 1 did, per label.
    learner, _, _ = restore(settings, weights, None)
    x = torch.tensor(ROWS)
    with torch.no_grad():
        theirs = exported.eval()(x)
        ours = learner.model.eval()(x)
    order = [vocab.index(label) for label in labels[:4]]
    assert torch.equal(ours[:, :4], theirs[:, order])
    # Served probabilities are a softmax over five classes now; their argmax is A's.
    assert [p["label"] for p in served["predictions"]] == [
        vocab[int(i)] for i in theirs.argmax(1)]

    # MNEMO_FREEZE=trunk: training moves only the head, and survives a restart from the state.
    trunk = {k: v.clone() for k, v in learner.model.state_dict().items()
             if not k.startswith("head.")}
    learner.model.train()
    _train(learner, seed=2)
    state = tensors_to_bytes(learner.state_dict(), learner.meta())
    assert tensors_from_bytes(state)[1]["frozen"] == '["standardizer", "body.0", "body.2"]'
    resumed, _, _ = restore(settings, weights, state)
    assert resumed.frozen == ("standardizer", "body.0", "body.2")
    _train(resumed, seed=3)
    for model in (learner.model, resumed.model):
        now = model.state_dict()
        assert all(torch.equal(now[k], v) for k, v in trunk.items())
    assert not torch.equal(resumed.model.head.weight, torch.from_numpy(
        model_from_bytes(weights)[0].head.weight.numpy()))


def _checkpoint_for(tmp_path: Path, input_dim: int) -> Path:
    from models.checkpoint import model_to_bytes
    from models.nets import MLPConfig, build_model

    path = tmp_path / f"dim{input_dim}.safetensors"
    path.write_bytes(model_to_bytes(build_model(MLPConfig(input_dim, (128, 128), 0))))
    return path


def test_misfits_are_refused_naming_the_setting(tmp_path: Path) -> None:
    wrong = _checkpoint_for(tmp_path, 6)
    with pytest.raises(SettingsError, match=r"MNEMO_INIT_CHECKPOINT: .*dim6.safetensors does not "
                       r"fit: standardizer.mean has shape \(6,\) there but \(4,\) here"):
        load_settings({"MNEMO_INPUT_DIM": "4", "MNEMO_INIT_CHECKPOINT": str(wrong)})
    with pytest.raises(SettingsError, match="MNEMO_INIT_CHECKPOINT: cannot read"):
        load_settings({"MNEMO_INIT_CHECKPOINT": str(tmp_path / "absent")})
    with pytest.raises(SettingsError, match="MNEMO_FREEZE: unknown layer"):
        load_settings({"MNEMO_FREEZE": "body.1"})
    with pytest.raises(SettingsError, match="MNEMO_FREEZE: 'none' cannot be combined"):
        load_settings({"MNEMO_FREEZE": "none,head"})
    with pytest.raises(SettingsError, match=r"MNEMO_FREEZE: expand .* cannot be frozen"):
        load_settings({"MNEMO_FREEZE": "trunk", "MNEMO_STRATEGY": "expand"})
    fits = load_settings({"MNEMO_INPUT_DIM": "6", "MNEMO_INIT_CHECKPOINT": str(wrong),
                          "MNEMO_FREEZE": "none"})
    assert fits.freeze == [] and fits.init_checkpoint == wrong


@pytest.mark.parametrize("role", ["learn", "serve"])
def test_the_cli_exits_2_on_a_checkpoint_that_does_not_fit(role: str, tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env = {**clean, "MNEMO_REDIS_URL": REDIS_URL, "MNEMO_INPUT_DIM": "4",
           "MNEMO_MODEL_NAME": f"t-{uuid.uuid4().hex[:12]}",
           "MNEMO_INIT_CHECKPOINT": str(_checkpoint_for(tmp_path, 6))}
    result = subprocess.run([sys.executable, "-m", "service", role], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "MNEMO_INIT_CHECKPOINT" in result.stderr and "Traceback" not in result.stderr
