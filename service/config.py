"""The one place that reads the environment: validated settings for every Mnemo process."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.drift import make_detector
from models.features import FeatureSchema, SchemaError
from models.nets import MLP, MLPConfig, build_model
from models.strategies import make_strategy, parse_strategy
from models.transfer import model_from_checkpoint, resolve_freeze

ENV_PREFIX = "MNEMO_"
VECTORS_LEARNING_RATE = 2e-3
# Records' default: their one-hot columns reach the network unscaled and each field's active
# column gets its own Adam step, so noisy tabular labels move the network more than dense
# vectors do. `make bench-records` at seed 0, served prequential per phase − best River, 2e-3
# → 1e-3 → 5e-4: 1e-3 missed Telco churn's first chunk (−0.021, −0.023), 5e-4 met it (−0.011,
# −0.012) and every other chunk; STAGGER met at both; Agrawal's function 2 spreads wider at
# 5e-4 (+0.014 to −0.040 over eight runs, two short; −0.000 to −0.011 over three at 1e-3;
# BENCHMARKS.md) and its function 0 at seed 1 is −0.014 at 1e-3, −0.022 at 5e-4. A drift's
# catch-up steps at ten times this rate (models/stream.py), so the slower rate costs little
# time to follow a change.
RECORDS_LEARNING_RATE = 5e-4
VECTORS_CONSOLIDATE_EVERY = 1000
# Records' default: re-anchoring the penalty on the current weights four times as often keeps
# the network off the noise of tabular streams and on a new concept sooner after a drift
# (BENCHMARKS.md, "Learning through the service").
RECORDS_CONSOLIDATE_EVERY = 250
FLOAT32_MAX = 3.4028234663852886e38


class SettingsError(ValueError):
    """Start-up configuration is invalid; the message names the variable."""


def _json_object(value: object) -> object:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return {}
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg}); expected an object such as {{\"lam\": 10}}") from None
    if not isinstance(decoded, dict):
        raise ValueError("expected a JSON object such as {\"lam\": 10}")
    return decoded


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    learner_metrics_port: int = Field(9101, ge=0, le=65535)
    redis_url: str | None = None
    # standalone: MNEMO_REDIS_URL is the server; cluster: any node of a Redis Cluster;
    # sentinel: the primary named MNEMO_SENTINEL_MASTER, found through MNEMO_SENTINELS.
    redis_mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sentinel_master: str = Field("mymaster", min_length=1, max_length=128)
    # A YAML (or JSON) file listing the models one deployment serves (service/catalog.py);
    # unset: the single model these settings describe.
    models: Path | None = None
    # How many models one learner process trains at most (0: no limit of its own; learners
    # still split the models evenly between them, service/worker/scheduler.py).
    learner_capacity: int = Field(0, ge=0, le=100_000)
    data_dir: Path = Path("data")
    model_name: str = Field("default", pattern=r"^[a-z0-9_-]{1,64}$")

    input_dim: int = Field(4, ge=1, le=65536)
    # Records instead of vectors (models/features.py): a JSON object mapping each field to its
    # kind, inline or in the file it names; MNEMO_INPUT_DIM is then derived from it.
    features: Annotated[dict[str, dict[str, Any]] | None, NoDecode] = None
    labels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    label_type: Literal["str", "int"] = "str"
    max_classes: int = Field(1000, ge=1, le=100_000)
    max_tags: int = Field(50, ge=1, le=10_000)

    model: Literal["mlp"] = "mlp"
    hidden: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [128, 128])
    # Progressive columns after the first; empty: as wide as MNEMO_HIDDEN.
    column_hidden: Annotated[list[int], NoDecode] = Field(default_factory=list)
    strategy: str = "online-ewc+replay"
    buffer: Literal["reservoir", "class-balanced", "recent", "generative"] = "reservoir"
    buffer_size: int = Field(1000, ge=1, le=10_000_000)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The learner's training precision; `auto` is resolved per device and model
    # (service/worker/state.py: resolve_precision).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    drift_detector: Literal["adwin", "page-hinkley", "none"] = "adwin"
    # Hyperparameters (docs/CONFIGURATION.md "Learning"); each version's meta records them.
    strategy_params: Annotated[dict[str, int | float], NoDecode] = Field(default_factory=dict)
    drift_params: Annotated[dict[str, int | float], NoDecode] = Field(default_factory=dict)
    # None: the input kind's default (effective_learning_rate): 2e-3 for vectors, 1e-3 records.
    learning_rate: float | None = Field(None, gt=0, le=1.0)
    replay_batch: int = Field(64, ge=0, le=65_536)
    steps_per_batch: int = Field(2, ge=1, le=64)
    drift_relax: float = Field(0.1, gt=0, le=1.0)
    rehearsal: float = Field(1.0, ge=0, le=64)
    publish_first_samples: int = Field(16, ge=1)
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    holdout_size: int = Field(500, ge=1, le=1_000_000)
    gate_tolerance: float = Field(0.02, ge=0.0, le=1.0)

    max_batch: int = Field(1024, ge=1, le=100_000)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_lag: int = Field(1_000_000, ge=1)
    prediction_ttl_seconds: int = Field(86_400, ge=1)
    keep_versions: int = Field(20, ge=1)
    durability: Literal["normal", "strict"] = "normal"

    api_token: str | None = None
    admin_token: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    publish_every_samples: int = Field(500, ge=1)
    publish_every_seconds: float = Field(5.0, gt=0)
    # None: the input kind's default (effective_consolidate_every): 1000 vectors, 250 records.
    consolidate_every_samples: int | None = Field(None, ge=1)
    lease_ttl_seconds: float = Field(10.0, gt=0)
    swap_poll_seconds: float = Field(1.0, gt=0)

    batch_max_rows: int = Field(64, ge=1)
    batch_max_wait_ms: float = Field(2.0, ge=0)
    redis_timeout_seconds: float = Field(2.0, gt=0)
    # Connections: a client must send a request's headers within header_timeout and its body
    # within body_timeout; idle keep-alive connections close after keep_alive; at most
    # max_connections are open at once per API process.
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(30.0, gt=0)
    keep_alive_seconds: float = Field(5.0, gt=0)
    max_connections: int = Field(1000, ge=1)
    # The prediction log's budget per model: predicts past it answer 429 until entries expire.
    prediction_log_max_bytes: int = Field(1 << 30, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "plain"] = "auto"  # auto: plain on a terminal

    init_checkpoint: Path | None = None
    freeze: Annotated[list[str], NoDecode] = Field(default_factory=list)
    heads: Literal["shared", "per-tag", "soft"] = "shared"
    # MNEMO_HEADS=soft: how hard every tag's copy of the trunk is pulled toward their mean.
    soft_sharing_strength: float = Field(10.0, ge=0.0, le=FLOAT32_MAX)
    # MNEMO_HEADS=soft: the hidden layers (0-based) each tag keeps a copy of; empty: all of them.
    soft_layers: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # A new tag's head or column starts from a meta-learned initialisation (models/meta_start.py).
    meta_start: Literal["none", "reptile"] = "none"

    _csv_fields = field_validator("labels", "hidden", "column_hidden", "cors_origins", "freeze",
                                  "sentinels", "soft_layers", mode="before")(
        _split_csv
    )

    _json_fields = field_validator("strategy_params", "drift_params", mode="before")(_json_object)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):  # type: ignore[no-untyped-def,override]
        # load_settings reads the environment itself (once, refusing unknown names), so the
        # class takes only explicit values: tests can build any configuration in-process.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _features_decide_input_dim(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("features") in (None, ""):
            return data
        try:
            schema = FeatureSchema.load(data["features"])
        except SchemaError as exc:
            raise ValueError(f"MNEMO_FEATURES: {exc}") from None
        given = data.get("input_dim")
        if given not in (None, "") and str(given) != str(schema.width):
            raise ValueError(f"MNEMO_INPUT_DIM: the schema (MNEMO_FEATURES) encodes records into "
                             f"{schema.width} numbers; leave MNEMO_INPUT_DIM unset")
        return {**data, "features": schema.to_mapping(), "input_dim": schema.width}

    @cached_property
    def feature_schema(self) -> FeatureSchema | None:
        """MNEMO_FEATURES parsed; None: the deployment takes vectors of MNEMO_INPUT_DIM."""
        return None if self.features is None else FeatureSchema.from_mapping(self.features)

    @field_validator("api_token", "admin_token", "redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port, e.g. sentinel-0:26379")
        return value

    @model_validator(mode="after")
    def _redis_mode_fits(self) -> Settings:
        if self.redis_mode == "sentinel" and not self.sentinels:
            raise ValueError("MNEMO_REDIS_MODE=sentinel needs MNEMO_SENTINELS (host:port,...)")
        if self.redis_mode == "cluster" and self.redis_url is None:
            raise ValueError("MNEMO_REDIS_MODE=cluster needs MNEMO_REDIS_URL naming any node")
        return self

    @property
    def external_redis(self) -> bool:
        """Whether a Redis is named (an URL, or sentinels); else `run` embeds one."""
        return self.redis_url is not None or self.redis_mode == "sentinel"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("freeze")
    @classmethod
    def _none_freezes_nothing(cls, value: list[str]) -> list[str]:
        if "none" in value and len(value) > 1:
            raise ValueError("'none' cannot be combined with layer names")
        return [] if value == ["none"] else value

    @field_validator("hidden")
    @classmethod
    def _positive_layers(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("hidden layer sizes must be positive integers, e.g. 128,128")
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        parse_strategy(value)  # its ValueError names the unknown part
        return value

    @model_validator(mode="after")
    def _hyperparameters_fit(self) -> Settings:
        # Built once here, so a misspelt or out-of-range parameter stops start-up naming it.
        try:
            make_strategy(self.penalty, **self.strategy_params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"MNEMO_STRATEGY_PARAMS: {exc}") from None
        if self.drift_detector != "none":
            try:
                make_detector(self.drift_detector, **self.drift_params)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"MNEMO_DRIFT_PARAMS: {exc}") from None
        elif self.drift_params:
            raise ValueError("MNEMO_DRIFT_PARAMS: set, but MNEMO_DRIFT_DETECTOR is none")
        return self

    def hyperparameters(self) -> dict[str, object]:
        """What a version's meta records of how it was learned."""
        return {"strategy": self.strategy, "strategy_params": dict(self.strategy_params),
                "drift_detector": self.drift_detector, "drift_params": dict(self.drift_params),
                "learning_rate": self.effective_learning_rate, "replay_batch": self.replay_batch,
                "steps_per_batch": self.steps_per_batch, "buffer": self.buffer,
                "buffer_size": self.buffer_size, "holdout_fraction": self.holdout_fraction,
                "gate_tolerance": self.gate_tolerance, "drift_relax": self.drift_relax,
                "rehearsal": self.rehearsal,
                "consolidate_every_samples": self.effective_consolidate_every,
                "publish_first_samples": self.publish_first_samples,
                "publish_every_samples": self.publish_every_samples}

    @model_validator(mode="after")
    def _labels_match_type(self) -> Settings:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("MNEMO_LABELS: duplicate label")
        if len(self.labels) > self.max_classes:
            raise ValueError("MNEMO_LABELS: more labels than MNEMO_MAX_CLASSES")
        for label in self.labels:
            if len(label) > 64:
                raise ValueError(f"MNEMO_LABELS: {label!r} is longer than 64 characters")
            if self.label_type == "int" and not _is_int_text(label):
                raise ValueError(f"MNEMO_LABELS: {label!r} is not an integer (MNEMO_LABEL_TYPE=int)")
        return self

    @model_validator(mode="after")
    def _transfer_fits(self) -> Settings:
        # Checked here, not when version 0 is made, so a wrong checkpoint or layer name stops
        # every role at start-up (exit 2) naming the setting, before anything is written.
        if self.penalty == "expand" and self.heads in ("per-tag", "soft"):
            raise ValueError(f"MNEMO_STRATEGY: expand widens the shared trunk, which {self.heads} "
                             "heads read at a fixed width; use MNEMO_HEADS=shared with it")
        if self.penalty == "progressive" and self.heads == "soft":
            raise ValueError("MNEMO_HEADS=soft: progressive columns (MNEMO_STRATEGY) already "
                             "give each tag its own network; use MNEMO_HEADS=shared with them")
        bad = [i for i in self.soft_layers if not 0 <= i < len(self.hidden)]
        if bad:
            raise ValueError(f"MNEMO_SOFT_LAYERS: {bad} name no hidden layer; MNEMO_HIDDEN has "
                             f"{len(self.hidden)} (0-based indices below {len(self.hidden)})")
        try:
            config = self.network(len(self.labels))
        except ValueError as exc:  # MLPConfig checks the column sizes against the strategy
            raise ValueError(f"MNEMO_COLUMN_HIDDEN: {exc}") from None
        try:
            frozen = resolve_freeze(config, self.freeze)
        except ValueError as exc:
            raise ValueError(f"MNEMO_FREEZE: {exc}") from None
        if self.penalty == "expand" and any(n.startswith("body.") for n in frozen):
            raise ValueError("MNEMO_FREEZE: expand (MNEMO_STRATEGY) grows the hidden layers, "
                             "so they cannot be frozen; freeze only standardizer or head")
        if self.init_checkpoint is not None:
            initial_model(self)  # raises naming MNEMO_INIT_CHECKPOINT
        return self

    @model_validator(mode="after")
    def _meta_start_has_tags(self) -> Settings:
        # It starts a new tag's head or column: without either there is nothing to start.
        if self.meta_start != "none" and not (self.heads == "per-tag"
                                              or self.penalty == "progressive"):
            raise ValueError(f"MNEMO_META_START={self.meta_start} starts a new tag's head or "
                             "column: it needs MNEMO_HEADS=per-tag or MNEMO_STRATEGY=progressive "
                             f"(got MNEMO_HEADS={self.heads}, MNEMO_STRATEGY={self.strategy})")
        return self

    @property
    def routes_by_tag(self) -> bool:
        """Tags select a head (MNEMO_HEADS=per-tag), a head and a trunk copy (soft) or a column
        (MNEMO_STRATEGY=progressive)."""
        return self.heads in ("per-tag", "soft") or self.penalty == "progressive"

    @property
    def effective_learning_rate(self) -> float:
        """MNEMO_LEARNING_RATE, or its default for the deployment's inputs."""
        if self.learning_rate is not None:
            return self.learning_rate
        return VECTORS_LEARNING_RATE if self.features is None else RECORDS_LEARNING_RATE

    @property
    def effective_consolidate_every(self) -> int:
        """MNEMO_CONSOLIDATE_EVERY_SAMPLES, or its default for the deployment's inputs."""
        if self.consolidate_every_samples is not None:
            return self.consolidate_every_samples
        return VECTORS_CONSOLIDATE_EVERY if self.features is None else RECORDS_CONSOLIDATE_EVERY

    def network(self, num_classes: int) -> MLPConfig:
        """The network these settings describe, over num_classes classes (no tag heads yet).
        Records: the standardiser scales the numeric values only (one-hot and indicator
        columns pass as they are), but in progressive columns and soft copies, which keep
        standardisers of their own over every column."""
        progressive, soft = self.penalty == "progressive", self.soft_copied_layers
        schema = self.feature_schema
        scaled = (schema.value_columns() if schema is not None and not progressive
                  and soft is None else None)
        return MLPConfig(self.input_dim, tuple(self.hidden), num_classes,
                         () if self.routes_by_tag else None, progressive,
                         tuple(self.column_hidden) or None, soft, scaled)

    @property
    def soft_copied_layers(self) -> tuple[int, ...] | None:
        """MNEMO_HEADS=soft: the hidden layers every tag keeps a copy of (MNEMO_SOFT_LAYERS,
        sorted; empty: all of them); None without soft sharing."""
        if self.heads != "soft":
            return None
        return tuple(sorted(set(self.soft_layers))) or tuple(range(len(self.hidden)))

    def typed_labels(self) -> list[str | int]:
        """The declared vocabulary as JSON values of the deployment's label type."""
        return [int(x) if self.label_type == "int" else x for x in self.labels]

    @property
    def use_replay(self) -> bool:
        return parse_strategy(self.strategy)[1]

    @property
    def penalty(self) -> str:
        """The regularising part of the strategy: `online-ewc+replay` → `online-ewc`."""
        return parse_strategy(self.strategy)[0]


def initial_model(settings: Settings) -> MLP:
    """Version 0's network over the declared labels: untrained, or from MNEMO_INIT_CHECKPOINT."""
    config = settings.network(len(settings.labels))
    path = settings.init_checkpoint
    if path is None:
        return build_model(config, seed=0)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"MNEMO_INIT_CHECKPOINT: cannot read {path}: {exc.strerror}") from None
    try:
        return model_from_checkpoint(blob, config, settings.labels)
    except ValueError as exc:  # CheckpointError included
        raise ValueError(f"MNEMO_INIT_CHECKPOINT: {path} does not fit: {exc}") from None


def _is_int_text(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def known_env_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


# Kubernetes injects service links for a Service named like the prefix ("mnemo"): they name
# no setting (docs/DESIGN.md §4) and must not stop a pod from starting.
_SERVICE_LINK_PREFIXES = (ENV_PREFIX + "SERVICE_", ENV_PREFIX + "PORT_")
_SERVICE_LINK_SCHEMES = ("tcp://", "udp://", "sctp://")


def is_service_link(name: str, value: str) -> bool:
    """MNEMO_SERVICE_HOST, MNEMO_PORT_8000_TCP_ADDR, MNEMO_PORT=tcp://10.96.0.12:8000 and the
    like: what Kubernetes sets for a Service named `mnemo`, never a Mnemo setting."""
    if name.startswith(_SERVICE_LINK_PREFIXES):
        return True
    return name == ENV_PREFIX + "PORT" and value.startswith(_SERVICE_LINK_SCHEMES)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment; unknown MNEMO_* names and bad values raise
    SettingsError naming the variable, so a typo never silently falls back to a default.
    Kubernetes service links are ignored (is_service_link)."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if not is_service_link(k, v)}
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known_env_names())
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    values = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError("invalid setting " + describe_error(exc)) from None


def describe_error(exc: ValidationError) -> str:
    """Each error of `exc` as `MNEMO_NAME: what is wrong`, joined by "; "."""
    parts = []
    for error in exc.errors():
        loc = error["loc"][0] if error["loc"] else ""
        msg = error["msg"].removeprefix("Value error, ")
        parts.append(f"{ENV_PREFIX}{str(loc).upper()}: {msg}" if loc else msg)
    return "; ".join(parts)
