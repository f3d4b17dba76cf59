"""A route YAML with tenants and rate limits, and a control plane on chosen ports, for the xDS tests
of ext_authz and ratelimit (tests/integration/test_xds_*.py)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.extauthz.issuer import Issuer
from tests.procs import PAVILION, Proc, free_port

DOMAIN = "pavilion"


def write_config(directory: Path, issuers: dict[str, Issuer], *, requests: int = 3) -> Path:
    """gateway.yaml (listener, services, the two Pavilion services) and routes.yaml: tenants trusting
    each issuer's keys inline, and one route limited to `requests` per hour per tenant (an hour, not a
    minute: a window rolling over between two requests of a test would start the count again)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gateway.yaml").write_text("""\
regions: [local]
listeners:
  - {name: public, address: 127.0.0.1, port: 10080}
services:
  - name: extauthz
    protocol: grpc
    endpoints: [{address: 127.0.0.1:9191, region: local}]
  - name: ratelimit
    protocol: grpc
    endpoints: [{address: 127.0.0.1:8081, region: local}]
  - name: accounts
    endpoints: [{address: 127.0.0.1:9001, region: local}]
extauthz: {service: extauthz}
ratelimit: {service: ratelimit, domain: DOMAIN}
""".replace("DOMAIN", DOMAIN))
    lines = ["tenants:"]
    for tenant_id, issuer in issuers.items():
        lines += [f"  - id: {tenant_id}", f"    issuer: {issuer.issuer}", f"    audiences: [{issuer.audience}]",
                  f"    algorithms: [{', '.join(issuer.algs)}]", f"    jwks: {{inline: {json.dumps(issuer.jwks())}}}"]
    lines += ["routes:", "  - name: accounts", "    match: {prefix: /v1/accounts}", "    service: accounts",
              "    rate_limits:", f"      - {{per: tenant, unit: hour, requests: {requests}}}"]
    # Written beside and moved into place: the control plane never reads half a file.
    temporary = directory / ".routes.yaml.tmp"
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(directory / "routes.yaml")
    return directory


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


class Plane:
    """`pavilion controlplane` on fixed ports, so a restart comes back where clients look for it."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.xds_port, self.admin_port = free_port(), free_port()
        self.proc: Proc | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    def start(self) -> Plane:
        self.proc = Proc([PAVILION, "--log-format", "console", "controlplane", "--config", str(self.config_dir),
                          "--xds-port", str(self.xds_port), "--admin-port", str(self.admin_port)],
                         name="controlplane")
        self.proc.wait_http(f"http://127.0.0.1:{self.admin_port}/readyz")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def status(self) -> dict[str, Any]:
        return get_json(f"http://127.0.0.1:{self.admin_port}/status")

    def version(self) -> str:
        return str(self.status()["version"])

    def wait_version_change(self, old: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = self.version()
            if version != old:
                return version
            time.sleep(0.05)
        raise TimeoutError(f"the control plane still serves {old}")
