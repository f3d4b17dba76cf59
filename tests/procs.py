"""Real processes for tests: start on a random loopback port, wait until ready, always stop.

Every server a test needs (Envoy, Redis, the Pavilion services, echo upstreams) goes through `Proc`,
so a failing test shows the process's own output, and no process outlives its test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pavilion.probe import http_ok, port_open

BIN = Path(sys.executable).parent
ENVOY = str(BIN / "envoy") if (BIN / "envoy").exists() else (shutil.which("envoy") or "envoy")
PAVILION = str(BIN / "pavilion")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process whose stdout+stderr go to a file, shown when a wait fails."""

    def __init__(self, argv: Sequence[str], *, name: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.name = name or Path(argv[0]).name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False)
        self.popen = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
            env={**os.environ, **(env or {})}, start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0, what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not {what} after {timeout}s:\n{self.output()[-5000:]}")

    def wait_port(self, port: int, timeout: float = 30.0) -> Proc:
        self.wait_until(lambda: port_open(port), timeout, f"listening on {port}")
        return self

    def wait_http(self, url: str, timeout: float = 30.0) -> Proc:
        self.wait_until(lambda: http_ok(url), timeout, f"answering {url}")
        return self

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(5)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_redis(port: int | None = None, extra: Sequence[str] = ()) -> tuple[Proc, int]:
    """A throwaway redis-server on loopback, with no persistence."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="redis-")
    proc = Proc([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", workdir, *extra], name=f"redis-{port}")
    proc.wait_port(port)
    return proc, port


def start_echo(name: str, region: str = "", port: int | None = None) -> tuple[Proc, int]:
    """The echo upstream from `pavilion.echo`, answering with its name and region."""
    port = port or free_port()
    proc = Proc([sys.executable, "-m", "pavilion.echo", "--port", str(port), "--name", name, "--region", region],
                name=f"echo-{name}")
    proc.wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port
