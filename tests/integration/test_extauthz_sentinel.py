"""`pavilion extauthz --redis redis+sentinel://...` as a process: revocations by `pavilion revoke` through
the sentinel, /status naming the master (never a password), and both again after the master is killed."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import check_direct, start_extauthz, wait_for, write_tenants
from tests.procs import PAVILION, free_port
from tests.sentinel_procs import MASTER_NAME, sentinel_group

pytestmark = pytest.mark.integration

ACME = Issuer()
PASSWORD = "hunter2-sentinel"


def answer(port: int, token: str) -> int | None:
    response = check_direct(port, {"authorization": f"Bearer {token}"}, "acme")
    if response is None:
        return None
    return 200 if response.status.code == 0 else response.denied_response.status.code


def revoke(url: str, jti: str, exp: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAVILION, "revoke", "--redis", url, "--tenant", "acme", "--issuer", ACME.issuer,
                           "--jti", jti, "--expires", str(exp)], capture_output=True, text=True, timeout=30,
                          check=False)


def test_checks_see_revocations_through_the_sentinel_before_and_after_a_failover(tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})  # on_store_error: deny
    admin_port = free_port()
    with sentinel_group(password=PASSWORD) as group:
        url = group.url()
        proc, port = start_extauthz(config, redis_url=url, admin_port=admin_port)
        try:
            def status() -> tuple[dict[str, Any], str]:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as response:
                    text = response.read().decode()
                return dict(json.loads(text)["revocations"]), text

            wait_for(lambda: status()[0]["subscribed"], 10, "subscribed")
            exp = int(time.time()) + 300
            before = ACME.token(jti="s-1", exp=exp)
            assert answer(port, before) == 200
            assert revoke(url, "s-1", exp).returncode == 0
            wait_for(lambda: answer(port, before) == 401, 5, "the revocation seen")
            shown, text = status()
            assert shown["kind"] == "redis-sentinel" and shown["master_name"] == MASTER_NAME
            assert shown["sentinels"] == [f"127.0.0.1:{group.sentinel_port}"] and shown["auth"] is True
            assert shown["master"] == f"127.0.0.1:{group.master_port}"
            assert PASSWORD not in text
            wait_for(group.replicated, 10, "the replica caught up")

            group.master.stop()
            new_master = f"127.0.0.1:{group.replica_port}"
            wait_for(lambda: group.master_address() == new_master, 30, "the replica promoted")
            after = ACME.token(jti="s-2", exp=exp)
            wait_for(lambda: answer(port, after) == 200, 30, "checks answered from the new master")
            # The sentinel may need a moment before it names the new master to every client.
            wait_for(lambda: revoke(url, "s-2", exp).returncode == 0, 30, "pavilion revoke on the new master")
            wait_for(lambda: answer(port, after) == 401, 5, "the revocation after the failover seen")
            assert answer(port, before) == 401  # replicated before the failover
            # A check asks Redis itself while the pub/sub is down, so the 401 above does not show the
            # subscription is back: wait for it (its reconnect backs off up to a second).
            wait_for(lambda: status()[0]["subscribed"], 10, "subscribed again on the new master")
            shown, text = status()
            assert shown["master"] == new_master and shown["subscribed"], shown
            assert PASSWORD not in text and PASSWORD not in proc.output()
        finally:
            proc.stop()


def test_a_bad_sentinel_url_stops_the_start_with_exit_2_and_the_password_starred(tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    done = subprocess.run([PAVILION, "extauthz", "--config", str(config), "--port", str(free_port()), "--redis",
                           f"redis+sentinel://:{PASSWORD}@127.0.0.1:26379,127.0.0.1:x/{MASTER_NAME}"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert "bad_redis_url" in done.stderr and "'127.0.0.1:x' is not HOST[:PORT]" in done.stderr, done.stderr
    assert ":***@" in done.stderr and PASSWORD not in done.stderr + done.stdout
