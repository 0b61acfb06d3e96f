"""The Lua scripts, loaded once per client."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    return resources.files("service.store").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """Registered scripts of one client (EVALSHA with a transparent reload on NOSCRIPT)."""

    def __init__(self, redis: Redis) -> None:
        names = (
            "feedback_append",
            "golden_add",
            "holdout_insert",
            "buffer_insert",
            "buffer_retire",
            "init_deployment",
            "publish",
            "activate",
            "prune",
            "lease_acquire",
            "lease_renew",
            "lease_break",
        )
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(_source(name)) for name in names
        }

    def __getattr__(self, name: str) -> AsyncScript:
        try:
            return self._scripts[name]
        except KeyError:
            raise AttributeError(name) from None
