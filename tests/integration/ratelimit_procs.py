"""Processes the rate-limit integration tests start: a Redis Cluster and `pavilion ratelimit`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.procs import PAVILION, REDIS_SERVER, Proc, free_port, http_ok

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@contextmanager
def redis_cluster(size: int = 3) -> Iterator[list[int]]:
    """`size` masters on loopback, slots spread by `redis-cli --cluster create`; yields their ports."""
    procs: list[Proc] = []
    try:
        ports = [_cluster_client_port() for _ in range(size)]
        for port in ports:
            workdir = tempfile.mkdtemp(prefix=f"redis-cluster-{port}-")
            procs.append(Proc([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                               "--cluster-port", str(free_port()),
                               "--cluster-config-file", f"{workdir}/nodes.conf", "--save", "", "--appendonly", "no",
                               "--dir", workdir], name=f"redis-cluster-{port}").wait_port(port))
        subprocess.run([REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 20
        while not all(_cluster_ok(port) for port in ports):
            if time.monotonic() > deadline:
                raise TimeoutError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.stop()


def _cluster_client_port() -> int:
    # Redis refuses cluster mode on ports above 55535 (it once put the bus at port + 10000).
    while True:
        port = free_port()
        if port <= 55535:
            return port


def _cluster_ok(port: int) -> bool:
    result = subprocess.run([REDIS_CLI, "-p", str(port), "CLUSTER", "INFO"], capture_output=True, text=True,
                            timeout=5)
    return "cluster_state:ok" in result.stdout


def start_ratelimit(config: Path, *, port: int | None = None, extra: Sequence[str] = (),
                    admin_port: int | None = None) -> tuple[Proc, int, int]:
    """`pavilion ratelimit` on loopback, ready when its admin /readyz answers; (proc, grpc port, admin port)."""
    port = port or free_port()
    admin_port = admin_port or free_port()
    proc = Proc([PAVILION, "--log-format", "console", "ratelimit", "--config", str(config), "--port", str(port),
                 "--admin-port", str(admin_port), *extra], name=f"ratelimit-{port}")
    proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{admin_port}/readyz"), 30, "ready")
    return proc, port, admin_port
