"""Worker "hosts" as network namespaces on this machine, each with two links into the root namespace:
one on the Redis network, one on the Postgres network (a bridge each, all addresses private to
this machine). Cutting a link is `ip link set down` on its root end: the host's packets are dropped
silently, as with a pulled cable, not refused."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ledgerq.ops.embedded import PostgresServer
from tests.chaos.cluster import Cluster

Net = Literal["redis", "postgres"]
NETS: dict[Net, tuple[str, int]] = {"redis": ("r", 81), "postgres": ("p", 82)}  # name suffix, 10.<n>.x.x


def ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


@dataclass
class Network:
    tag: int = field(default_factory=lambda: os.getpid() % 250)
    hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for net, (suffix, octet) in NETS.items():
            bridge = self.bridge(net)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)  # a leftover of a killed run
            ip("link", "add", bridge, "type", "bridge")
            ip("addr", "add", f"{self.server_address(net)}/24", "dev", bridge)
            ip("link", "set", bridge, "up")
            del suffix, octet

    def bridge(self, net: Net) -> str:
        return f"lq{self.tag}{NETS[net][0]}"

    def server_address(self, net: Net) -> str:
        """Where the server on `net` listens, as the hosts see it."""
        return f"10.{NETS[net][1]}.{self.tag}.1"

    def add_host(self) -> str:
        n = len(self.hosts) + 1
        host = f"lq{self.tag}h{n}"
        subprocess.run(["ip", "netns", "del", host], capture_output=True)
        ip("netns", "add", host)
        ip("link", "set", "lo", "up", namespace=host)
        for net in NETS:
            root_end, host_end = self.link(host, net), f"{host}{NETS[net][0]}n"
            subprocess.run(["ip", "link", "del", root_end], capture_output=True)
            ip("link", "add", root_end, "type", "veth", "peer", "name", host_end)
            ip("link", "set", host_end, "netns", host)
            ip("link", "set", root_end, "master", self.bridge(net), "up")
            ip("addr", "add", f"10.{NETS[net][1]}.{self.tag}.{10 + n}/24", "dev", host_end, namespace=host)
            ip("link", "set", host_end, "up", namespace=host)
        self.hosts.append(host)
        return host

    def address(self, host: str, net: Net) -> str:
        """The host's own address on `net` (where a server it runs listens)."""
        return f"10.{NETS[net][1]}.{self.tag}.{10 + self.hosts.index(host) + 1}"

    def link(self, host: str, net: Net) -> str:
        return f"{host}{NETS[net][0]}"

    def cut(self, host: str, *nets: Net) -> None:
        for net in nets:
            ip("link", "set", self.link(host, net), "down")

    def heal(self, host: str, *nets: Net) -> None:
        for net in nets:
            ip("link", "set", self.link(host, net), "up")

    def close(self) -> None:
        for host in self.hosts:
            for net in NETS:
                subprocess.run(["ip", "link", "del", self.link(host, net)], capture_output=True)
            subprocess.run(["ip", "netns", "del", host], capture_output=True)
        for net in NETS:
            subprocess.run(["ip", "link", "del", self.bridge(net)], capture_output=True)


def networked_cluster(root: Path, network: Network) -> tuple[Cluster, dict[str, str]]:
    """A Cluster whose Postgres and Redis also listen on the network's bridges, and the environment
    that points a process on a host at them."""
    pg_address, redis_address = network.server_address("postgres"), network.server_address("redis")
    postgres = PostgresServer(root / "pgdata", options=(f"listen_addresses=127.0.0.1,{pg_address}",))
    postgres.init()
    with open(root / "pgdata" / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {pg_address.rsplit('.', 1)[0]}.0/24 trust\n")
    # Protected mode would refuse the hosts (no password, not loopback); the network is this machine's own.
    redis_options = ("--bind", "127.0.0.1", redis_address, "--protected-mode", "no")
    cluster = Cluster(root, postgres=postgres, redis_options=redis_options)
    env = {
        "LEDGERQ_DATABASE_URL": cluster.postgres.url.replace("127.0.0.1", pg_address),
        "LEDGERQ_REDIS_URL": cluster.redis.url.replace("127.0.0.1", redis_address),
    }
    return cluster, env
