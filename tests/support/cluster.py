"""A real Redis Cluster on loopback: 3 primaries and 3 replicas, for the length of a test.

Nodes are `RedisServer`s started with ``--cluster-enabled yes`` (Debian's redis-server,
or a Valkey binary for WAITAOF), joined by ``redis-cli --cluster create ...
--cluster-replicas 1 --cluster-yes``. A short ``cluster-node-timeout`` makes a failover
take seconds, not the default 15.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.processes import CLUSTER_BUS_OFFSET, RedisServer, free_port, wait_until

NODE_TIMEOUT_MS = 1500


class Cluster:
    """Cluster nodes (six by default: three primaries, a replica each); `url` is a seed
    for ``CIOQ_REDIS_URL``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        exe: str | None = None,
        appendonly: bool = True,
        fsync: str = "everysec",
        size: int = 6,
        replicas: int = 1,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        """`size` nodes, `replicas` replicas per primary (6 and 1: three primaries)."""
        self.nodes: list[RedisServer] = []
        ports = [_cluster_port() for _ in range(size)]
        try:
            for port in ports:
                self.nodes.append(
                    RedisServer(
                        data_dir / str(port),
                        appendonly=appendonly,
                        fsync=fsync,
                        exe=exe,
                        port=port,
                        extra=[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            str(data_dir / str(port) / "nodes.conf"),
                            "--cluster-node-timeout",
                            str(node_timeout_ms),
                            # A replica always stands in for a dead primary, however long
                            # its link was down: on a starved test machine the link can
                            # look stale and the default factor (10) then blocked failover.
                            "--cluster-replica-validity-factor",
                            "0",
                        ],
                    )
                )
            _redis_cli(
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def client(self) -> redis.RedisCluster:
        live = next(n for n in self.nodes if n.proc is not None and n.proc.alive())
        return redis.RedisCluster(host="127.0.0.1", port=live.port)

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Until every live node reports cluster_state:ok with all slots covered."""

        def ok() -> bool:
            for node in self.live():
                try:
                    info = node.client().cluster("info")
                except redis.RedisError:
                    return False
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
            return True

        wait_until(ok, timeout_s=timeout_s, interval_s=0.1, what="cluster_state:ok")

    def wait_failover(self, dead: RedisServer, timeout_s: float = 60) -> None:
        """Until a replica of the `dead` primary was promoted and the cluster is ok."""
        wait_until(
            lambda: len([n for n in self.primaries() if n is not dead]) == 3,
            timeout_s=timeout_s,
            interval_s=0.1,
            what="a replica promoted",
        )
        self.wait_ok(timeout_s)

    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.alive()]

    def primaries(self) -> list[RedisServer]:
        return [n for n in self.live() if n.client().info("replication")["role"] == "master"]

    def node_of(self, key: str) -> RedisServer:
        """The live primary serving `key`'s slot."""
        client = self.client()
        try:
            node = client.get_node_from_key(key)
        finally:
            client.close()
        return next(n for n in self.nodes if n.port == int(node.port))

    def node_id(self, node: RedisServer) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID").decode())

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.terminate()
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    return free_port(also_free=CLUSTER_BUS_OFFSET)


def _redis_cli(*args: str) -> str:
    exe = shutil.which("redis-cli")
    if exe is None:
        raise RuntimeError("redis-cli is not installed")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args[:2])} failed: {done.stdout}{done.stderr}")
    return done.stdout


def reshard(cluster: Cluster, source: RedisServer, target: RedisServer, slots: int) -> str:
    """Move `slots` slots from `source` to `target` with ``redis-cli --cluster reshard``."""
    return _redis_cli(
        "--cluster",
        "reshard",
        f"127.0.0.1:{source.port}",
        "--cluster-from",
        cluster.node_id(source),
        "--cluster-to",
        cluster.node_id(target),
        "--cluster-slots",
        str(slots),
        "--cluster-yes",
        "--cluster-pipeline",
        "10",
    )
