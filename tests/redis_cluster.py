"""A Redis Cluster of the test's own: three masters (and optionally a replica of each), all
`redis-server --cluster-enabled yes` processes on loopback ports taken by binding, the 16384 slots
split with CLUSTER ADDSLOTSRANGE and the nodes joined with CLUSTER MEET. A node can be stopped and
started again on its port (its nodes.conf keeps its identity), to see the bot ride out an outage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from bot.embedded_redis import redis_server_binary
from tests.redis_ha import free_port, wait_until

SLOTS = 16384
NODE_TIMEOUT_MS = 2000


class Node:
    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.bus_port = free_port()  # not port + 10000, which may be taken or above 65535
        self.password = password
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {directory}", 'save ""',
                 "appendonly yes", "cluster-enabled yes", "cluster-config-file nodes.conf",
                 f"cluster-port {self.bus_port}",
                 f"cluster-node-timeout {NODE_TIMEOUT_MS}"]
        if password:
            lines += [f"requirepass {password}", f"masterauth {password}"]
        (directory / "redis.conf").write_text("\n".join(lines) + "\n")
        self.client = redis.Redis(port=self.port, password=password, socket_connect_timeout=0.5,
                                  socket_timeout=10)
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen([redis_server_binary(), str(self.directory / "redis.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.client.ping, 30, f"cluster node on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def node_id(self) -> str:
        return self.client.execute_command("CLUSTER", "MYID").decode()

    def state_ok(self) -> bool:
        return self.client.cluster("info")["cluster_state"] == "ok"


class Cluster:
    """Three masters with a third of the slots each; with `replicas`, one replica per master."""

    def __init__(self, directory: Path, *, replicas: bool = False, password: str | None = None) -> None:
        self.password = password
        self.masters = [Node(directory / f"m{i}", password) for i in range(3)]
        self.replicas = [Node(directory / f"r{i}", password) for i in range(3)] if replicas else []
        step = SLOTS // 3
        for i, node in enumerate(self.masters):
            last = SLOTS - 1 if i == 2 else (i + 1) * step - 1
            node.client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        first = self.masters[0]
        for node in self.nodes[1:]:
            first.client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        wait_until(lambda: all(len(n.client.cluster("nodes")) == len(self.nodes) for n in self.nodes),
                   60, "every node to know every other")
        for master, replica in zip(self.masters, self.replicas):
            master_id = master.node_id()
            wait_until(lambda: replica.client.execute_command("CLUSTER", "REPLICATE", master_id),
                       60, "the replica to follow its master")
        for replica in self.replicas:
            wait_until(lambda r=replica: r.client.info("replication").get("master_link_status") == "up",
                       60, "the replicas to sync")
        self.wait_ok()

    @property
    def nodes(self) -> list[Node]:
        return self.masters + self.replicas

    def wait_ok(self) -> None:
        wait_until(lambda: all(n.state_ok() for n in self.nodes if n.process is not None),
                   60, "cluster_state:ok on every node")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{n.port}" for n in self.masters[:2])

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.masters[0].port, password=self.password)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
