"""The whole gateway for end-to-end and resilience tests, started through `pavilion run`'s own plan.

`running_stack` writes a route YAML directory (demo tenant with a locally generated key, a public
and a protected route, routes limited per subject and per OAuth client, one requiring a scope and a
claim value, ext_authz and ratelimit services) on random loopback ports, builds the plan `make run`
uses (launch_plan.build_plan: redis-server, echo upstream, control plane, `pavilion extauthz --xds`,
`pavilion ratelimit --xds --redis`, Envoy) and starts it with the same Launcher, so these tests prove
`make run` itself. `SteadyLoad` sends bounded, steady traffic and records every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from controlplane.config.load import load_config
from extauthz.local_keys import load_local_key, private_key_path, signing_algorithm
from extauthz.signing import jwk_thumbprint, public_jwk, sign_token
from pavilion.launch_plan import build_plan, local_tenant_keys
from pavilion.launcher import Launcher, port_free
from tests.integration.gateway_procs import Reply, request
from tests.procs import free_port

ISSUER = "https://demo.e2e.test"


def tenant_yaml(tenant: str, issuer: str, on_store_error: str = "deny") -> str:
    return f"""
  - id: {tenant}
    issuer: {issuer}
    audiences: [{tenant}-api]
    algorithms: [ES256]
    jwks: {{file: .run/{tenant}-jwks.json}}
    claims_to_headers: {{sub: x-user-id}}
    on_store_error: {on_store_error}
"""


def write_config(directory: Path, ports: dict[str, int]) -> None:
    """gateway.yaml (wiring), tenants.yaml, routes.yaml: every port from `ports`. Timeouts are generous
    so a busy test machine does not turn a slow answer into a 503 the tests would count as a failure."""
    (directory / "gateway.yaml").write_text(f"""
regions: [local]
listeners: [{{name: public, address: 127.0.0.1, port: {ports["listen"]}}}]
services:
  - {{name: app, endpoints: [{{address: 127.0.0.1:{ports["app"]}, region: local}}]}}
  - {{name: extauthz, protocol: grpc, endpoints: [{{address: 127.0.0.1:{ports["extauthz"]}, region: local}}]}}
  - {{name: ratelimit, protocol: grpc, endpoints: [{{address: 127.0.0.1:{ports["ratelimit"]}, region: local}}]}}
extauthz: {{service: extauthz, timeout: 1s}}
ratelimit: {{service: ratelimit, domain: e2e, timeout: 500ms, failure_mode_deny: false}}
""")
    (directory / "tenants.yaml").write_text("tenants:" + tenant_yaml("demo", ISSUER))
    (directory / "routes.yaml").write_text("""
routes:
  - name: public
    match: {prefix: /public}
    service: app
    auth: none
    rate_limits:
      - {per: client_ip, unit: minute, requests: 100000, on_backend_error: allow}
  - name: strict
    match: {prefix: /strict}
    service: app
    auth: none
    rate_limits:
      - {per: client_ip, unit: minute, requests: 100000, on_backend_error: deny}
  - name: api
    match: {prefix: /api}
    service: app
    auth: {tenants: [demo]}
  - name: limited
    match: {prefix: /limited}
    service: app
    auth: {tenants: [demo]}
    rate_limits:
      - {per: [tenant, subject], unit: hour, requests: 5}
  - name: per-client
    match: {prefix: /per-client}
    service: app
    auth: {tenants: [demo]}
    rate_limits:
      - {per: [tenant, client], unit: hour, requests: 6}  # above /limited's 5: make run's burst line keeps that
  - name: admin
    match: {prefix: /admin}
    service: app
    auth: {scopes: [accounts:admin], claims: {groups: [ops]}}
""")


@dataclass
class Stack:
    launcher: Launcher
    config_dir: Path
    args: argparse.Namespace
    ports: dict[str, int]
    specs: dict[str, Any] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.args.redis_port}/0"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['listen']}{path}"

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> Reply:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return request(self.url(path), headers=headers, **kwargs)

    def token(self, subject: str = "alice", tenant: str = "demo", ttl: int = 600, **extra: Any) -> str:
        """A token signed with the tenant's local key, as `pavilion token` makes it; `extra`: more claims."""
        config = load_config(self.config_dir)
        entry = next(t for t in config.tenants if t.id == tenant)
        private = load_local_key(private_key_path(entry))
        alg = signing_algorithm(entry)
        now = int(time.time())
        claims = {"iss": entry.issuer, "aud": entry.audiences[0], "sub": subject, "iat": now, "exp": now + ttl,
                  "jti": f"{subject}-{time.monotonic_ns()}", **extra}
        return sign_token(claims, private, alg, jwk_thumbprint(public_jwk(private, alg=alg)))

    def kill(self, name: str) -> None:
        self.launcher.kill(name)

    def restart(self, name: str) -> None:
        self.launcher.start(self.specs[name], timeout=60)

    def ensure_all_running(self) -> None:
        """Restart whatever a failed test left killed, so the next test of the module starts whole."""
        running = {r.spec.name for r in self.launcher.running if r.alive()}
        for name, spec in self.specs.items():
            if name not in running:
                if any(r.spec.name == name for r in self.launcher.running):
                    self.launcher.kill(name)
                self.launcher.start(spec, timeout=60)

    def envoy_admin(self, path: str) -> Reply:
        return request(f"http://127.0.0.1:{self.args.envoy_admin_port}{path}")

    def service_status(self, role: str) -> dict[str, Any]:
        """`extauthz` or `ratelimit`'s /status (config_version, source, last_error), on its admin port."""
        return request(f"http://127.0.0.1:{self.ports[role] + 1}/status").body

    def versions(self) -> dict[str, str | None]:
        """The config version each of the three parts reports."""
        return {"controlplane": self.controlplane_status().get("version"),
                **{role: self.service_status(role).get("config_version") for role in ("extauthz", "ratelimit")}}

    def controlplane_status(self) -> dict[str, Any]:
        return request(f"http://127.0.0.1:{self.args.admin_port}/status").body


def free_pair() -> int:
    """A port P with P + 1 free too: pavilion run puts a service's admin HTTP on its gRPC port + 1."""
    while True:
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port


def demo_ports() -> dict[str, int]:
    return {"listen": free_port(), "app": free_port(), "extauthz": free_pair(), "ratelimit": free_pair()}


def plan_args(config_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(
        config=str(config_dir), region=None, xds_port=free_port(), admin_port=free_port(),
        envoy_admin_port=free_port(), redis_port=free_port(), no_redis=False, no_upstreams=False,
        state_dir=str(config_dir / ".run"))


@contextmanager
def running_stack(directory: Path) -> Iterator[Stack]:
    config_dir = directory / "routes"
    config_dir.mkdir()
    ports = demo_ports()
    write_config(config_dir, ports)
    args = plan_args(config_dir)
    config = load_config(config_dir)
    local_tenant_keys(config, args.state_dir)
    logs = directory / "logs"
    logs.mkdir()
    # The ratelimit service's Redis timeout is 10 ms by default; on this shared 2-core machine a healthy
    # Redis sometimes answers later, and a deny-on-error rule would then refuse. The plan is unchanged.
    specs = [dataclasses.replace(spec, env={**spec.env, "PAVILION_REDIS_TIMEOUT_MS": "250"})
             if spec.name == "ratelimit" else spec for spec in build_plan(args, config, str(logs))]
    launcher = Launcher(specs, log_dir=str(logs), out=sys.stderr)
    stack = Stack(launcher, config_dir, args, ports, {spec.name: spec for spec in specs})
    try:
        launcher.start_all(timeout=60)
        wait_for(lambda: stack.get("/public/ready").status == 200, 30, "the public route served")
        yield stack
    except BaseException:
        for running in launcher.running:
            print(f"--- {running.spec.name} ---\n{running.tail(40)}", file=sys.stderr)
        raise
    finally:
        launcher.stop_all()


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not {what} within {timeout}s")
        time.sleep(0.02)


@dataclass
class Answer:
    at: float     # sent
    done: float   # answered (or failed)
    path: str
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)


class SteadyLoad:
    """`rate` requests a second over `targets` (path, token) in turn, from a thread, until stopped.

    Each request is its own task with a 5 s timeout, so a slow answer does not slow the rate. Every
    answer is kept with its send time; `marks` name moments (`mark("killed")`) for slicing.
    """

    def __init__(self, base_url: str, targets: Sequence[tuple[str, str | None]], rate: float = 80.0) -> None:
        self.base_url = base_url
        self.targets = list(targets)
        self.rate = rate
        self.answers: list[Answer] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="steady-load", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    async def _one(self, session: aiohttp.ClientSession, path: str, token: str | None) -> None:
        sent = time.monotonic()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            async with session.get(self.base_url + path, headers=headers) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError):
            status = 0
        self.answers.append(Answer(sent, time.monotonic(), path, status))

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        connector = aiohttp.TCPConnector(limit=64, force_close=False)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            interval, n = 1.0 / self.rate, 0
            started = time.monotonic()
            while not self._stop.is_set():
                path, token = self.targets[n % len(self.targets)]
                task = asyncio.create_task(self._one(session, path, token))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks, timeout=6)

    def statuses(self, path: str | None = None, start: str | None = None, end: str | None = None) -> Counter[int]:
        """Answers by status for `path` (prefix; all when None) of requests sent at or after mark `start`
        and answered before mark `end`: wholly inside the window, so a request in flight across a kill
        or a restart is not counted on either side of it."""
        low = self.marks[start] if start else float("-inf")
        high = self.marks[end] if end else float("inf")
        return Counter(a.status for a in self.answers
                       if low <= a.at and a.done < high and (path is None or a.path.startswith(path)))

    def failures(self) -> dict[str, Any]:
        """Every non-200 answer as (path, sent, answered, status), times relative to the first mark,
        with the marks: what a failing assertion shows."""
        zero = min(self.marks.values(), default=0.0)
        return {"marks": {name: round(at - zero, 3) for name, at in self.marks.items()},
                "non_200": [(a.path, round(a.at - zero, 3), round(a.done - zero, 3), a.status)
                            for a in self.answers if a.status != 200][:40]}

    def timeline(self, path: str, since: str) -> list[tuple[float, float, int]]:
        """(sent, answered, status) relative to mark `since`, for failure messages."""
        zero = self.marks[since]
        return [(round(a.at - zero, 3), round(a.done - zero, 3), a.status) for a in self.answers
                if a.path.startswith(path)]
