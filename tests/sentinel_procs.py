"""A Redis that Sentinel fails over, for tests: a master, one replica and one sentinel on loopback."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import REDIS_SERVER, Proc, free_port, start_redis

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MASTER_NAME = "pavilion"


@dataclass
class SentinelGroup:
    master: Proc
    master_port: int
    replica_port: int
    sentinel_port: int
    password: str | None
    sentinel_password: str | None = None

    def url(self) -> str:
        """The `--redis` URL both services take (pavilion.sentinel_url)."""
        credentials = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{credentials}127.0.0.1:{self.sentinel_port}/{MASTER_NAME}{query}"

    def cli(self, port: int, *command: str) -> str:
        secret = self.sentinel_password if port == self.sentinel_port else self.password
        auth = ["-a", secret, "--no-auth-warning"] if secret else []
        done = subprocess.run([REDIS_CLI, "-p", str(port), *auth, *command], capture_output=True, text=True,
                              timeout=5)
        return done.stdout.strip()

    def replicated(self) -> bool:
        """Whether the replica holds every write the master has (their replication offsets agree)."""
        master = _field(self.cli(self.master_port, "INFO", "replication"), "master_repl_offset")
        return master is not None and master == _field(self.cli(self.replica_port, "INFO", "replication"),
                                                         "slave_repl_offset")

    def master_address(self) -> str:
        """host:port of the master the sentinel names now."""
        return ":".join(self.cli(self.sentinel_port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME).split())


@contextlib.contextmanager
def sentinel_group(password: str | None = None, sentinel_password: str | None = None) -> Iterator[SentinelGroup]:
    """Started and in sync (the replica linked, the sentinel aware of it), always stopped. Sentinel calls
    the master down after 1 s of silence and promotes the replica (quorum 1). `password` is the Redis
    servers' requirepass, `sentinel_password` the sentinel's own."""
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    procs: list[Proc] = []
    try:
        master, master_port = start_redis(extra=auth)
        procs.append(master)
        replica, replica_port = start_redis(extra=[*auth, "--replicaof", "127.0.0.1", str(master_port)])
        procs.append(replica)
        sentinel_port = free_port()
        directory = Path(tempfile.mkdtemp(prefix="sentinel-"))
        config = directory / "sentinel.conf"  # sentinel rewrites it: a file of its own
        config.write_text("\n".join([
            f"port {sentinel_port}", "bind 127.0.0.1", f"dir {directory}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
            f"sentinel failover-timeout {MASTER_NAME} 5000",
            *([f"sentinel auth-pass {MASTER_NAME} {password}"] if password else []),
            *([f"requirepass {sentinel_password}"] if sentinel_password else []), ""]))
        sentinel = Proc([REDIS_SERVER, str(config), "--sentinel"], name=f"sentinel-{sentinel_port}")
        procs.append(sentinel)
        sentinel.wait_port(sentinel_port)
        group = SentinelGroup(master, master_port, replica_port, sentinel_port, password, sentinel_password)
        replica.wait_until(lambda: "master_link_status:up" in group.cli(replica_port, "INFO", "replication"),
                           30, "replica in sync")
        sentinel.wait_until(lambda: str(replica_port) in group.cli(sentinel_port, "SENTINEL", "replicas",
                                                                     MASTER_NAME), 30, "sentinel sees the replica")
        yield group
    finally:
        for proc in reversed(procs):
            proc.stop()


def _field(info: str, name: str) -> str | None:
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None
