"""`pavilion run`: the whole gateway on one machine, for trying it out.

It starts, in order, whatever the plan lists (launch_plan.py: Redis, demo upstreams, the control
plane, ext_authz, ratelimit, an Envoy edge), waits until each is ready, and stops everything it
started on Ctrl-C, each process as its own process group so workers go with their parent. The plan
is a list of `ProcessSpec`, so a new service is an entry, not a code path.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pavilion.probe import http_ok, port_open

BIN = Path(sys.executable).parent


def envoy_binary() -> str:
    local = BIN / "envoy"
    return str(local) if local.exists() else (shutil.which("envoy") or "envoy")


@dataclass(frozen=True)
class ProcessSpec:
    """One child process and how to tell it is ready: an HTTP URL answering 2xx and/or open ports."""

    name: str
    argv: Sequence[str]
    ready_url: str | None = None
    ready_ports: Sequence[int] = ()
    ports: Sequence[int] = ()  # ports it binds: checked free before it starts
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file path -> text written before the start


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers bind: connections a killed server left in TIME_WAIT do not make its port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LaunchError(Exception):
    """A process could not start or did not become ready; the message says which and shows its log."""


@dataclass
class Running:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: Any

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Launcher:
    """Starts specs in order, each only after the previous one is ready; stops them in reverse order."""

    def __init__(self, specs: Sequence[ProcessSpec], *, log_dir: str | None = None, out: TextIO = sys.stdout) -> None:
        self.specs = list(specs)
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="pavilion-run-"))
        self.out = out
        self.running: list[Running] = []
        self.stopped: list[tuple[str, int]] = []  # (name, pid) of every process stopped, in stop order

    def start_all(self, timeout: float = 60.0) -> None:
        for spec in self.specs:
            self.start(spec, timeout)

    def start(self, spec: ProcessSpec, timeout: float = 60.0) -> Running:
        """Start one spec and wait until it is ready (also how a test restarts a process it killed)."""
        busy = [port for port in spec.ports if not port_free(port)]
        if busy:
            raise LaunchError(f"{spec.name}: port {busy[0]} is already in use; stop what holds it or pick "
                              "another port")
        for path, text in spec.files.items():
            Path(path).write_text(text, encoding="utf-8")
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(list(spec.argv), stdout=log_file, stderr=subprocess.STDOUT,
                                 env={**os.environ, **spec.env}, start_new_session=True)
        running = Running(spec, popen, log_path, log_file)
        self.running.append(running)
        self._wait_ready(running, timeout)
        print(f"  started {spec.name} (pid {popen.pid})", file=self.out, flush=True)
        return running

    def get(self, name: str) -> Running:
        return next(r for r in reversed(self.running) if r.spec.name == name)

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Signal one running process's group and reap it (tests: a dependency dies)."""
        running = self.get(name)
        if running.alive():
            os.killpg(running.popen.pid, signum)
        running.popen.wait(10)
        running.log_file.close()
        self.stopped.append((name, running.popen.pid))
        self.running.remove(running)

    def pids(self) -> list[tuple[str, int]]:
        return [(r.spec.name, r.popen.pid) for r in self.running]

    def _wait_ready(self, running: Running, timeout: float) -> None:
        spec = running.spec
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not running.alive():
                raise LaunchError(f"{spec.name} exited ({running.popen.returncode}) before it was ready:\n"
                                  f"{running.tail()}")
            url_ok = spec.ready_url is None or http_ok(spec.ready_url)
            if url_ok and all(port_open(port) for port in spec.ready_ports):
                return
            time.sleep(0.1)
        raise LaunchError(f"{spec.name} not ready after {timeout:.0f}s:\n{running.tail()}")

    def wait(self) -> int:
        """Block until Ctrl-C / SIGTERM (returns 0) or until a child dies (returns 1)."""
        stopping = False

        def on_signal(_signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stopping:
                dead = next((r for r in self.running if not r.alive()), None)
                if dead is not None:
                    print(f"{dead.spec.name} exited ({dead.popen.returncode}):\n{dead.tail()}", file=self.out)
                    return 1
                time.sleep(0.2)
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM to every process group, newest first; SIGKILL to any still there after `timeout`."""
        for running in reversed(self.running):
            if running.alive():
                os.killpg(running.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for running in reversed(self.running):
            try:
                running.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(running.popen.pid, signal.SIGKILL)
                running.popen.wait(5)
            # Workers (ext_authz --workers) share the group; make sure none outlives its parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(running.popen.pid, signal.SIGKILL)
            running.log_file.close()
            self.stopped.append((running.spec.name, running.popen.pid))
        self.running.clear()
