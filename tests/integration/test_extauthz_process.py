"""`pavilion extauthz` as a process: config reload on change (and a broken edit kept out), and
`--workers 2` on one port with revocations shared through Redis and metrics summed by the parent."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pavilion.probe import http_ok
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import check_direct, pavilion_revoke, start_extauthz, wait_for, write_tenants
from tests.procs import PAVILION, free_port, start_redis

pytestmark = pytest.mark.integration

ACME = Issuer()
BETA = Issuer(issuer="https://idp.beta.test", name="beta")


def status_of(port: int, token: str, tenant: str | None) -> int | None:
    response = check_direct(port, {"authorization": f"Bearer {token}"}, tenant)
    if response is None:
        return None
    return 200 if response.status.code == 0 else response.denied_response.status.code


def test_config_file_changes_are_applied_and_a_broken_edit_keeps_the_last_good_config(tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    proc, port = start_extauthz(config)
    try:
        beta_token = BETA.token()
        assert status_of(port, beta_token, None) == 401  # unknown issuer
        write_tenants(config, {"acme": ACME, "beta": BETA})
        wait_for(lambda: status_of(port, beta_token, None) == 200, 10.0, "beta accepted after the edit")
        good = config.read_text()
        config.write_text(good + "    clock_skew: sometime\n")
        wait_for(lambda: "config_rejected" in proc.output(), 10.0, "the broken edit reported")
        assert re.search(r"tenants\.yaml:\d+:\d+: tenants\[1\]\.clock_skew", proc.output())
        assert status_of(port, beta_token, None) == 200
        assert status_of(port, ACME.token(), "acme") == 200
    finally:
        proc.stop()


def test_two_workers_share_one_port_revocations_and_metrics(tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    redis, redis_port = start_redis()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    admin_port = free_port()
    proc, port = start_extauthz(config, redis_url=redis_url, workers=2, admin_port=admin_port)
    try:
        assert http_ok(f"http://127.0.0.1:{admin_port}/readyz")  # the parent's: a worker serves the port
        exp = int(time.time()) + 300
        token = ACME.token(jti="w-1", exp=exp)
        # Fresh connections: the kernel spreads them over both workers.
        assert [status_of(port, token, "acme") for _ in range(12)] == [200] * 12
        pavilion_revoke(redis_url, "acme", ACME.issuer, "--jti", "w-1", "--expires", str(exp))
        took = wait_for(lambda: [status_of(port, token, "acme") for _ in range(8)] == [401] * 8, 5.0,
                        "refused by every worker")
        assert took < 1.5  # 1 s to reach every worker, plus one round of 8 fresh connections to see it

        def counted() -> dict[tuple[str, str], float]:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
                text = response.read().decode()
            return {(m[0], m[1]): float(m[2]) for m in re.findall(
                r'pavilion_extauthz_checks_total\{reason="(\w+)",status="(\d+)"\} ([0-9.e+]+)', text)}

        # Workers add their counts to Prometheus twice a second; the parent sums all workers.
        wait_for(lambda: counted().get(("ok", "200"), 0) >= 12 and counted().get(("revoked", "401"), 0) >= 8,
                 5.0, "every worker's checks counted by the parent")

        def status() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as response:
                return dict(json.loads(response.read()))

        # Each worker publishes its status once a second; the parent lists the live ones.
        def both_current(shown: dict[str, Any]) -> bool:
            return len(shown["workers"]) == 2 and all(
                worker["ready"] and worker["revocations"]["subscribed"] for worker in shown["workers"])

        wait_for(lambda: both_current(status()), 5.0, "both workers ready and subscribed on the parent's /status")
        shown = status()
        assert shown["ready"] and shown["config_version"] is not None, shown
        assert {worker["config_version"] for worker in shown["workers"]} == {shown["config_version"]}
        assert len({worker["pid"] for worker in shown["workers"]}) == 2
    finally:
        proc.stop()
        redis.stop()


def test_a_broken_tenant_file_stops_the_start_with_file_line_errors(tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    config.write_text(config.read_text() + "    max_lifetime: 1 day\n")
    symmetric = tmp_path / "symmetric.yaml"
    symmetric.write_text("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n"
                         "    jwks: {inline: {keys: [{kty: oct, k: c2VjcmV0, kid: s}]}}\n")
    for path, expected in ((config, r"tenants\.yaml:\d+:\d+: tenants\[0\]\.max_lifetime"),
                           (symmetric, r"no usable key")):
        done = subprocess.run([PAVILION, "extauthz", "--config", str(path), "--port", str(free_port())],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 2, done.stderr
        assert re.search(expected, done.stderr + done.stdout), done.stderr


def test_status_shows_whether_revocations_arrive_by_pubsub_through_a_redis_restart(tmp_path: Path) -> None:
    import json

    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    redis, redis_port = start_redis()
    restarted = None
    admin_port = free_port()
    proc, _port = start_extauthz(config, redis_url=f"redis://127.0.0.1:{redis_port}/0", admin_port=admin_port)

    def revocations() -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as response:
            return dict(json.loads(response.read())["revocations"])

    def subscribed_metric() -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
            found = re.search(r"^pavilion_extauthz_revocation_subscribed ([0-9.e+]+)$", response.read().decode(), re.M)
        return float(found[1]) if found else None

    try:
        wait_for(lambda: revocations()["subscribed"] is True, 10.0, "subscribed")
        assert subscribed_metric() == 1.0
        assert revocations() == {"kind": "redis", "address": f"127.0.0.1:{redis_port}", "db": 0, "tls": False,
                                 "auth": False, "subscribed": True}
        redis.stop()
        wait_for(lambda: revocations()["subscribed"] is False, 10.0, "the lost subscription shown")
        assert subscribed_metric() == 0.0
        restarted, _ = start_redis(port=redis_port)
        wait_for(lambda: revocations()["subscribed"] is True, 15.0, "subscribed again")
        assert subscribed_metric() == 1.0
    finally:
        proc.stop()
        redis.stop()
        if restarted is not None:
            restarted.stop()


def test_with_workers_the_parent_is_ready_only_once_a_worker_serves(tmp_path: Path) -> None:
    """With --xds a worker opens its port after the first tenants: until then the parent's /readyz
    (what Kubernetes asks) says 503, as a single process's does."""
    from tests.procs import Proc

    port, admin_port, nowhere = free_port(), free_port(), free_port()
    proc = Proc([PAVILION, "extauthz", "--xds", f"127.0.0.1:{nowhere}", "--port", str(port), "--workers", "2",
                 "--admin-port", str(admin_port)], name="extauthz-waiting")
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/healthz")
        for _ in range(10):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=5)
            refused.value.close()
            assert refused.value.code == 503
            time.sleep(0.1)
    finally:
        proc.stop()
