"""MNEMO_MODELS (service/catalog.py): the models of one deployment from a YAML or JSON file,
each taking what it does not set from the environment, then the defaults; every mistake
stops start-up naming the file, the model and the setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.catalog import load_models
from service.config import SettingsError, load_settings

FILE = """
models:
  - name: fraud
    input_dim: 12
    labels: ok,fraud
    strategy: lwf+replay
  - name: churn
    label_type: int
    labels: [0, 1]
    publish_every_samples: 50
"""


def _models(tmp_path: Path, text: str, **env: str) -> list:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    environ = {"MNEMO_MODELS": str(path), **{f"MNEMO_{k.upper()}": v for k, v in env.items()}}
    return load_models(load_settings(environ))


def test_each_model_takes_its_own_then_the_environment_then_the_default(tmp_path: Path) -> None:
    fraud, churn = _models(tmp_path, FILE, input_dim="7", port="9000",
                           publish_every_samples="300")
    assert (fraud.model_name, fraud.input_dim, fraud.labels, fraud.strategy) == \
        ("fraud", 12, ["ok", "fraud"], "lwf+replay")
    assert (churn.model_name, churn.input_dim, churn.label_type, churn.labels) == \
        ("churn", 7, "int", ["0", "1"])
    assert fraud.publish_every_samples == 300 and churn.publish_every_samples == 50
    assert churn.strategy == "online-ewc+replay"  # the default
    assert fraud.port == churn.port == 9000  # the process's


def test_a_model_of_records_beside_models_of_vectors(tmp_path: Path) -> None:
    text = """
models:
  - name: orders
    features: {amount: numeric, country: {kind: categorical, max_categories: 5, buckets: 2}}
  - name: sensors
    input_dim: 3
  - name: plain
"""
    orders, sensors, plain = _models(tmp_path, text, input_dim="7")
    assert orders.input_dim == 2 + 8 and orders.feature_schema is not None  # derived
    assert (sensors.input_dim, sensors.features) == (3, None)
    assert (plain.input_dim, plain.features) == (7, None)  # the environment's
    # Each takes its inputs' default learning rate (5e-4 for records, 2e-3 for vectors).
    assert (orders.effective_learning_rate, plain.effective_learning_rate) == (5e-4, 2e-3)
    orders, sensors, plain = _models(tmp_path, text, features='{"a": "boolean"}')
    assert (sensors.input_dim, sensors.features) == (3, None)  # its own dimension: vectors
    assert plain.input_dim == 2 and plain.features == {"a": {"kind": "boolean", "required": False}}


def test_json_is_yaml_too(tmp_path: Path) -> None:
    text = json.dumps({"models": [{"name": "a", "input_dim": 3}, {"name": "b"}]})
    assert [(m.model_name, m.input_dim) for m in _models(tmp_path, text)] == [("a", 3), ("b", 4)]


def test_unset_is_the_one_model_of_the_settings() -> None:
    settings = load_settings({"MNEMO_MODEL_NAME": "solo", "MNEMO_INPUT_DIM": "5"})
    assert load_models(settings) == [settings]


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  - name: a\n    port: 9000\n", "model 'a': port is a setting of the process"),
    ("models:\n  - name: a\n    api_token: x\n", "model 'a': api_token is a setting of the process"),
    ("models:\n  - name: a\n    input_dims: 3\n", "model 'a': unknown setting 'input_dims'"),
    ("models:\n  - name: a\n  - name: a\n", "model 'a' is listed twice"),
    ("models:\n  - name: a\n    input_dim: 0\n", "model 'a': MNEMO_INPUT_DIM:"),
    ("models:\n  - name: Not-Valid\n", "model 'Not-Valid': MNEMO_MODEL_NAME:"),
    ("models:\n  - input_dim: 3\n", "model 1 is not a mapping with a `name`"),
    ("models: []\n", "expected `models:`, a list of at least one mapping"),
    ("name: a\n", "expected `models:`"),
    ("models: [\n", "not YAML"),
])
def test_a_mistake_names_the_file_the_model_and_the_setting(tmp_path: Path, text: str,
                                                            message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        _models(tmp_path, text)
    assert f"MNEMO_MODELS ({tmp_path / 'models.yaml'})" in str(refused.value)
    assert message in str(refused.value)


def test_a_missing_file_stops_every_command_with_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for command in ("serve", "learn"):
        done = subprocess.run([sys.executable, "-m", "service", command], capture_output=True,
                              text=True, timeout=60,
                              env={"MNEMO_MODELS": str(missing), "MNEMO_REDIS_URL": "redis://x",
                                   "PATH": "/usr/bin:/bin"})
        assert done.returncode == 2, done.stderr
        assert f"MNEMO_MODELS ({missing}): cannot read it" in done.stderr
