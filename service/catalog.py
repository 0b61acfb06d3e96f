"""The models one deployment serves: those MNEMO_MODELS lists, or the one model the settings
describe.

MNEMO_MODELS names a YAML file (JSON is YAML too):

    models:
      - name: fraud
        input_dim: 12
        labels: ok,fraud
      - name: churn
        label_type: int
        strategy: lwf+replay

Each entry takes any per-model setting under its variable's name without `MNEMO_`, lower
case; what it does not give comes from the environment, then the default. Settings of the
process (ports, Redis, tokens, connection limits, logging) cannot differ per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.config import ENV_PREFIX, Settings, SettingsError, describe_error

# What one process has once, whatever it serves.
PROCESS_SETTINGS = frozenset({
    "host", "port", "learner_metrics_port", "redis_url", "redis_mode", "sentinels",
    "sentinel_master", "data_dir", "models", "learner_capacity", "redis_timeout_seconds",
    "api_token", "admin_token", "cors_origins", "max_body_bytes", "header_timeout_seconds",
    "body_timeout_seconds", "keep_alive_seconds", "max_connections", "log_level", "log_format",
    "durability", "lease_ttl_seconds", "swap_poll_seconds", "device", "model_name",
})
MODEL_SETTINGS = frozenset(Settings.model_fields) - PROCESS_SETTINGS
MAX_MODELS = 1000
# Lists of words: YAML reads `labels: [0, 1]` as numbers, the settings want text.
TEXT_LISTS = frozenset({"labels", "freeze"})


def load_models(settings: Settings) -> list[Settings]:
    """Each model's settings, the default model (the first listed) first. Raises
    SettingsError naming the file, the model and the setting."""
    if settings.models is None:
        return [settings]
    where = f"{ENV_PREFIX}MODELS ({settings.models})"
    entries = _entries(settings.models, where)
    base = settings.model_dump()
    models: list[Settings] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SettingsError(f"{where}: model {number} is not a mapping with a `name`")
        name = entry["name"]
        if name in seen:
            raise SettingsError(f"{where}: model {name!r} is listed twice")
        seen.add(name)
        values = {key: _as_text_list(value) if key in TEXT_LISTS else value
                  for key, value in entry.items() if key != "name"}
        _check_names(values, f"{where}: model {name!r}")
        try:
            models.append(Settings(**{**_inherited(base, values), **values, "model_name": name}))
        except ValidationError as exc:
            raise SettingsError(f"{where}: model {name!r}: {describe_error(exc)}") from None
    return models


def _inherited(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What an entry takes from the environment. A schema and an input dimension describe the
    same thing: an entry naming one does not inherit the other."""
    if "features" in values and "input_dim" not in values:
        return {k: v for k, v in base.items() if k != "input_dim"}  # derived from its schema
    if "input_dim" in values and "features" not in values:
        return {**base, "features": None}  # vectors, whatever the environment's schema
    return base


def _entries(path: Path, where: str) -> list[Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{where}: not YAML: {exc}") from None
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"{where}: expected `models:`, a list of at least one mapping")
    if len(entries) > MAX_MODELS:
        raise SettingsError(f"{where}: {len(entries)} models, more than {MAX_MODELS}")
    return entries


def _as_text_list(value: Any) -> Any:
    if isinstance(value, list):
        return [str(item) if isinstance(item, (int, float)) and not isinstance(item, bool)
                else item for item in value]
    return value


def _check_names(values: dict[str, Any], where: str) -> None:
    for key in values:
        if key in PROCESS_SETTINGS:
            raise SettingsError(f"{where}: {key} is a setting of the process "
                                f"({ENV_PREFIX}{key.upper()}), the same for every model")
        if key not in MODEL_SETTINGS:
            raise SettingsError(f"{where}: unknown setting {key!r}")
