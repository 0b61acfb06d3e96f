"""Start-up configuration (docs/DESIGN.md §4): unknown names and invalid values stop start-up naming the
variable; settings that must agree with stored state, and the Redis eviction policy, are
checked against the server before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from service.config import Settings, SettingsError, load_settings
from service.embedded import EmbeddedRedis
from service.store.connection import StoreError
from service.store.keys import Keys
from tests.conftest import running_app, snapshot

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_name_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="MNEMO_FOO") as caught:
        load_settings({"MNEMO_FOO": "1", "MNEMO_PORT": "9000"})
    assert "MNEMO_PORT" not in str(caught.value)
    with pytest.raises(SettingsError, match="MNEMO_INPUT_DIMS"):  # a typo never falls back
        load_settings({"MNEMO_INPUT_DIMS": "64"})


@pytest.mark.parametrize(
    ("env", "name", "fragment"),
    [
        ({"MNEMO_PORT": "abc"}, "MNEMO_PORT", "integer"),
        ({"MNEMO_PORT": "70000"}, "MNEMO_PORT", "65535"),
        ({"MNEMO_LABEL_TYPE": "float"}, "MNEMO_LABEL_TYPE", "'str' or 'int'"),
        ({"MNEMO_STRATEGY": "ewc+magic"}, "MNEMO_STRATEGY", "magic"),
        ({"MNEMO_HIDDEN": "128,abc"}, "MNEMO_HIDDEN", "integer"),
        ({"MNEMO_HIDDEN": "128,0"}, "MNEMO_HIDDEN", "positive"),
        ({"MNEMO_HIDDEN": ""}, "MNEMO_HIDDEN", "positive"),
        ({"MNEMO_INPUT_DIM": "0"}, "MNEMO_INPUT_DIM", "greater than or equal to 1"),
        ({"MNEMO_MODEL_NAME": "Has Spaces"}, "MNEMO_MODEL_NAME", "pattern"),
        ({"MNEMO_DURABILITY": "paranoid"}, "MNEMO_DURABILITY", "'normal' or 'strict'"),
        ({"MNEMO_PRECISION": "fp16"}, "MNEMO_PRECISION", "'auto', 'fp32' or 'bf16'"),
        ({"MNEMO_LABEL_TYPE": "int", "MNEMO_LABELS": "1,two"}, "MNEMO_LABELS", "'two' is not an integer"),
        ({"MNEMO_LABELS": "a,b,a"}, "MNEMO_LABELS", "duplicate"),
        ({"MNEMO_COLUMN_HIDDEN": "32,32"}, "MNEMO_COLUMN_HIDDEN", "progressive"),
        ({"MNEMO_STRATEGY": "progressive", "MNEMO_COLUMN_HIDDEN": "32"}, "MNEMO_COLUMN_HIDDEN",
         "one positive size per hidden layer"),
    ],
)
def test_invalid_value_names_the_variable(env: dict[str, str], name: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith("invalid setting"), message
    assert name in message and fragment in message, message


def test_values_are_parsed_by_type() -> None:
    ints = load_settings({"MNEMO_LABELS": " 3, 1 ,2,", "MNEMO_LABEL_TYPE": "int"})
    assert ints.labels == ["3", "1", "2"]
    assert ints.typed_labels() == [3, 1, 2]
    strs = load_settings({"MNEMO_LABELS": "setosa, versicolor", "PATH": "/ignored", "MNEMO": "x"})
    assert strs.typed_labels() == ["setosa", "versicolor"]
    assert load_settings({}).typed_labels() == []
    other = load_settings({
        "MNEMO_PORT": "9000", "MNEMO_HIDDEN": "64, 32", "MNEMO_API_TOKEN": "", "MNEMO_LOG_LEVEL": "debug",
        "MNEMO_CORS_ORIGINS": "http://a.example,http://b.example", "MNEMO_DURABILITY": "strict",
        "MNEMO_PRECISION": "bf16",
    })
    assert (other.port, other.hidden, other.api_token, other.log_level) == (9000, [64, 32], None, "DEBUG")
    assert other.cors_origins == ["http://a.example", "http://b.example"]
    assert other.durability == "strict"
    assert (other.precision, load_settings({}).precision) == ("bf16", "auto")


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        ({"input_dim": 4}, {"input_dim": 5}, "MNEMO_INPUT_DIM=5"),
        ({"label_type": "str"}, {"label_type": "int", "labels": ["1"]}, "MNEMO_LABEL_TYPE=int"),
    ],
)
async def test_identity_mismatch_refuses_to_start(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str,
    first: dict[str, object], second: dict[str, object], named: str,
) -> None:
    async with running_app(make_settings(**first)) as c:
        assert (await c.get("/readyz")).status_code == 200
    before = snapshot(redis_client, model_name)
    assert before  # the first start stored the deployment
    with pytest.raises(StoreError, match=named) as caught:
        async with running_app(make_settings(**second)):
            pass
    assert "refusing to start" in str(caught.value)
    assert snapshot(redis_client, model_name) == before


async def test_stored_model_name_mismatch_refuses_to_start(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    async with running_app(make_settings()):
        pass
    # Keys written by another deployment (e.g. a copied or renamed key space).
    redis_client.hset(Keys(model_name).meta, "model_name", "someone-else")
    before = snapshot(redis_client, model_name)
    with pytest.raises(StoreError, match=f"MNEMO_MODEL_NAME={model_name} .*someone-else"):
        async with running_app(make_settings()):
            pass
    assert snapshot(redis_client, model_name) == before


async def test_matching_restart_only_grows_the_vocabulary(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, model_name: str
) -> None:
    async with running_app(make_settings(labels=["b", "a"])):
        pass
    async with running_app(make_settings(labels=["a", "c"])) as c:
        # The vocabulary keeps its order and appends; version 0 is not re-created.
        assert redis_client.lrange(Keys(model_name).vocab_order, 0, -1) == [b"b", b"a", b"c"]
        assert (await c.get("/v1/versions/0")).json()["labels"] == ["b", "a"]


async def test_evicting_redis_is_refused(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        direct = redis.Redis.from_url(server.url)
        try:
            direct.config_set("maxmemory-policy", "allkeys-lru")
            with pytest.raises(StoreError, match=r"maxmemory-policy is allkeys-lru.*noeviction"):
                async with running_app(make_settings(redis_url=server.url)):
                    pass
            assert direct.dbsize() == 0
            direct.config_set("maxmemory-policy", "noeviction")
            async with running_app(make_settings(redis_url=server.url)) as c:
                assert (await c.get("/readyz")).status_code == 200
            assert direct.dbsize() > 0
        finally:
            direct.close()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("role", ["serve", "learn"])
def test_single_role_needs_a_redis_url(role: str) -> None:
    result = _cli(role)
    assert result.returncode == 2, result.stderr
    assert "MNEMO_REDIS_URL is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_refuses_unknown_and_invalid_settings() -> None:
    unknown = _cli("run", MNEMO_FOO="1")
    assert unknown.returncode == 2, unknown.stderr
    assert "MNEMO_FOO" in unknown.stderr and "Traceback" not in unknown.stderr
    invalid = _cli("serve", MNEMO_REDIS_URL="redis://127.0.0.1:6379/11", MNEMO_PORT="eighty")
    assert invalid.returncode == 2, invalid.stderr
    assert "MNEMO_PORT" in invalid.stderr and "Traceback" not in invalid.stderr
    precision = _cli("learn", MNEMO_REDIS_URL="redis://127.0.0.1:6379/11", MNEMO_PRECISION="fp16")
    assert precision.returncode == 2, precision.stderr
    assert "MNEMO_PRECISION" in precision.stderr and "Traceback" not in precision.stderr


def test_kubernetes_service_links_are_not_settings() -> None:
    # Exactly what a pod gets for `kind: Service, metadata.name: mnemo` with a port named http.
    links = {
        "MNEMO_SERVICE_HOST": "10.96.0.12", "MNEMO_SERVICE_PORT": "8000",
        "MNEMO_SERVICE_PORT_HTTP": "8000", "MNEMO_PORT": "tcp://10.96.0.12:8000",
        "MNEMO_PORT_8000_TCP": "tcp://10.96.0.12:8000", "MNEMO_PORT_8000_TCP_PROTO": "tcp",
        "MNEMO_PORT_8000_TCP_PORT": "8000", "MNEMO_PORT_8000_TCP_ADDR": "10.96.0.12",
    }
    settings = load_settings({**links, "MNEMO_INPUT_DIM": "3"})
    assert settings.port == 8000 and settings.input_dim == 3  # the default port, not the link
    assert load_settings({**links, "MNEMO_PORT": "9000"}).port == 9000  # a real setting wins
    with pytest.raises(SettingsError, match="MNEMO_PROT"):  # typos are still refused
        load_settings({**links, "MNEMO_PROT": "9000"})
