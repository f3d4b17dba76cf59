"""`pavilion run` (what `make run` calls) as a user meets it: the lines it prints work when pasted
into a shell (401, 200, 429, 403 then 200 with a route's scope), and Ctrl-C stops every process it
started, none left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pavilion.probe import port_open
from tests.integration.e2e_stack import demo_ports, write_config
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0  # a zombie is not running


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "in-memory"])
def test_the_printed_lines_work_and_ctrl_c_leaves_nothing(tmp_path: Path, redis: bool) -> None:
    config = tmp_path / "routes"
    config.mkdir()
    ports = demo_ports()
    write_config(config, ports)
    own = {"xds": free_port(), "admin": free_port(), "envoy": free_port(), "redis": free_port()}
    run = Proc([PAVILION, "run", "--config", str(config), "--state-dir", str(config / ".run"),
                "--xds-port", str(own["xds"]), "--admin-port", str(own["admin"]),
                "--envoy-admin-port", str(own["envoy"]), "--redis-port", str(own["redis"]),
                *([] if redis else ["--no-redis"])],
               name="pavilion-run", cwd=str(REPO))
    try:
        run.wait_until(lambda: "Ctrl-C stops everything" in run.output(), 90, "up")
        out = run.output()
        assert f"the gateway is up: http://127.0.0.1:{ports['listen']}" in out
        assert "tenant demo: signing key" in out and "generated now" in out
        assert "PRIVATE KEY" not in out
        # Without Redis it says so, and offers no revoke line (revocations need Redis).
        assert ("in-memory stores (--no-redis was given)" in out) != redis
        assert ("pavilion revoke --redis" in out) == redis
        lines = [line.strip() for line in out.splitlines()]
        token_line = next(line for line in lines if line.startswith("TOKEN=$("))
        curls = [line for line in lines if line.startswith(("curl", "for i in"))]
        scoped = [line for line in lines if line.startswith("SCOPED=$(")]
        # The route requiring a scope and a claim, with the plain token, then with the scoped one.
        requires = [line for line in curls if "/admin/" in line and "Bearer" in line]
        script = "\n".join([token_line, *(_status_only(line) for line in curls[:3]), *scoped,
                            *(_status_only(line) for line in requires)])
        revoke = [line.split("    #")[0] for line in lines if " revoke --redis " in line]
        if redis:  # the printed revoke line, then the 200 line again: now refused
            script += "\n" + "\n".join([f"{revoke[0]} >/dev/null", "sleep 1", _status_only(curls[1])])
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=str(REPO),
                              check=False)
        assert done.returncode == 0, done.stderr
        outcomes = done.stdout.split()
        assert outcomes[:2] == ["401", "200"], done.stdout  # without, then with the token
        assert outcomes[2:8] == ["200"] * 5 + ["429"], done.stdout  # the burst
        assert outcomes[8:10] == ["403", "200"], done.stdout  # the route's scope: without, then with
        assert outcomes[10:] == (["401"] if redis else []), done.stdout  # revoked within a second
        started = [(name, int(pid)) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", out)]
        names = [name for name, _pid in started]
        assert (names[0] == "redis") == redis
        assert names[-4:] == ["controlplane", "extauthz", "ratelimit", "envoy-edge"]
        run.popen.send_signal(signal.SIGINT)
        assert run.popen.wait(30) == 0
        stopped = re.findall(r"(\S+) \(pid (\d+)\)", run.output().split("stopped: ")[-1])
        assert sorted((name, int(pid)) for name, pid in stopped) == sorted(started)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(_gone(pid) for _name, pid in started):
            time.sleep(0.1)
        assert [name for name, pid in started if not _gone(pid)] == []
        assert still_open((*ports.values(), *own.values())) == []
    finally:
        run.stop()


def still_open(ports: tuple[int, ...], seconds: float = 5.0) -> list[int]:
    """The ports something still listens on once `seconds` passed (a stopped process's socket may
    outlive its pid for a moment)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(port_open(p) for p in ports):
        time.sleep(0.1)
    return [p for p in ports if port_open(p)]


def _status_only(line: str) -> str:
    """A printed curl line, made to print only the status code (the burst line already does)."""
    command = line.split("    #")[0]
    if command.startswith("for i in"):
        return command
    return command.replace("curl -i", "curl -s -o /dev/null -w '%{http_code} '", 1)


def test_sigterm_while_starting_stops_what_already_started(tmp_path: Path) -> None:
    config = tmp_path / "routes"
    config.mkdir()
    ports = demo_ports()
    write_config(config, ports)
    own = {"xds": free_port(), "admin": free_port(), "envoy": free_port(), "redis": free_port()}
    run = Proc([PAVILION, "run", "--config", str(config), "--state-dir", str(config / ".run"),
                "--xds-port", str(own["xds"]), "--admin-port", str(own["admin"]),
                "--envoy-admin-port", str(own["envoy"]), "--redis-port", str(own["redis"])],
               name="pavilion-run", cwd=str(REPO))
    try:
        run.wait_until(lambda: "started redis" in run.output(), 60, "starting")
        run.popen.send_signal(signal.SIGTERM)
        assert run.popen.wait(30) == 130
        out = run.output()
        assert "Ctrl-C stops everything" not in out  # it was stopped before it was up
        started = [int(pid) for pid in re.findall(r"started \S+ \(pid (\d+)\)", out)]
        assert started and all(_gone(pid) for pid in started)
        assert still_open((*ports.values(), *own.values())) == []
    finally:
        run.stop()
