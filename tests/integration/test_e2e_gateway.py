"""The whole gateway end to end, as `make run` starts it (launch_plan's processes): 401 without a token,
200 with one (identity headers reach the upstream), 403 without a route's scope or claim value, 429
after a burst with RateLimit headers, per subject and per OAuth client, a revocation refused within
a second, and a live edit adding a tenant and a route with no restart."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.local_keys import ensure_local_key
from extauthz.tenant import JwksSource, Tenant
from tests.integration.e2e_stack import ISSUER, Stack, running_stack, tenant_yaml, wait_for
from tests.integration.gateway_procs import request
from tests.procs import PAVILION

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e")) as running:
        yield running


def test_all_three_parts_run_on_one_config_version(stack: Stack) -> None:
    versions = stack.versions()
    assert versions["controlplane"] and len(set(versions.values())) == 1, versions
    for role in ("extauthz", "ratelimit"):
        assert stack.service_status(role)["source"].startswith("xds"), stack.service_status(role)


def test_no_token_is_401_a_token_is_200_with_identity_headers(stack: Stack) -> None:
    refused = stack.get("/api/accounts")
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    reply = stack.get("/api/accounts", stack.token("alice"))
    assert reply.status == 200, reply.body
    seen = {name.lower(): value for name, value in reply.body["headers"].items()}
    assert seen["x-pavilion-tenant"] == "demo"
    assert seen["x-pavilion-subject"] == "alice"
    assert seen["x-user-id"] == "alice"
    spoofed = request(stack.url("/api/accounts"), headers={"authorization": f"Bearer {stack.token('alice')}",
                                                          "x-pavilion-tenant": "evil", "x-user-id": "root"})
    seen = {name.lower(): value for name, value in spoofed.body["headers"].items()}
    assert (seen["x-pavilion-tenant"], seen["x-user-id"]) == ("demo", "alice")
    assert stack.get("/public/hello").status == 200  # auth: none


def test_a_burst_past_the_limit_is_429_with_ratelimit_headers(stack: Stack) -> None:
    token = stack.token("bob")
    statuses = [stack.get("/limited/x", token).status for _ in range(5)]
    assert statuses == [200] * 5
    over = stack.get("/limited/x", token)
    assert over.status == 429
    assert "ratelimit" in over.headers or "x-ratelimit-limit" in over.headers, over.headers
    assert int(over.headers["retry-after"]) > 0
    assert stack.get("/limited/x", stack.token("bob-2")).status == 200  # counted per subject


def test_a_limit_per_client_counts_each_relying_party_apart(stack: Stack) -> None:
    def statuses(count: int, **claims: Any) -> list[int]:
        # A new subject each time: the count is the client's, whoever the user is.
        return [stack.get("/per-client/x", stack.token(f"user-{n}", **claims)).status for n in range(count)]

    assert statuses(7, client_id="rp-one") == [200] * 6 + [429]
    assert statuses(6, azp="rp-two") == [200] * 6  # OIDC's azp when there is no client_id
    assert statuses(1, client_id="rp-two") == [429]  # the same client either way
    assert statuses(7) == [200] * 6 + [429]  # tokens naming no client share one counter: never unlimited


def test_a_route_requiring_a_scope_and_a_claim_admits_only_tokens_that_carry_them(stack: Stack) -> None:
    refused = stack.get("/admin/users", stack.token("erin", scope="accounts:read", groups=["ops"]))
    assert refused.status == 403, refused.body
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", error_description="the token lacks a scope this route requires", '
        'scope="accounts:admin"')
    wrong_group = stack.get("/admin/users", stack.token("erin", scope="accounts:read accounts:admin", groups=["dev"]))
    assert (wrong_group.status, wrong_group.body) == (403, {"error": "claim_not_allowed"})
    admitted = stack.get("/admin/users", stack.token("erin", scp=["accounts:admin"], groups=["dev", "ops"]))
    assert admitted.status == 200, admitted.body
    assert stack.get("/api/x", stack.token("erin")).status == 200  # other routes require nothing more


def test_a_revoked_token_is_refused_within_a_second(stack: Stack) -> None:
    token = stack.token("carol")
    assert stack.get("/api/x", token).status == 200
    done = subprocess.run([PAVILION, "revoke", "--redis", stack.redis_url, "--tenant", "demo", "--issuer", ISSUER,
                           "--subject", "carol"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    took = wait_for(lambda: stack.get("/api/x", token).status == 401, 3, "revoked")
    assert took < 1.0, f"revocation took {took:.2f}s"
    assert stack.get("/api/x", stack.token("dave")).status == 200  # other subjects unaffected


def test_a_live_edit_adds_a_tenant_and_a_route_without_a_restart(stack: Stack) -> None:
    before = stack.launcher.pids()
    versions_before = stack.versions()
    uptime = _envoy_uptime(stack)
    state = Path(stack.args.state_dir)
    beta = Tenant(id="beta", issuer="https://beta.e2e.test", audiences=("beta-api",), algorithms=("ES256",),
                  jwks=JwksSource(file=str(state / "beta-jwks.json")))
    ensure_local_key(beta)  # the key exists before any config names it
    tenants = stack.config_dir / "tenants.yaml"
    tenants.write_text(tenants.read_text() + tenant_yaml("beta", beta.issuer))
    (stack.config_dir / "beta.yaml").write_text(
        "routes:\n  - {name: beta, match: {prefix: /beta}, service: app, auth: {tenants: [beta]}}\n")
    token = stack.token("erin", tenant="beta")
    took = wait_for(lambda: stack.get("/beta/x", token).status == 200, 10, "the new tenant served on the new route")
    assert took < 5.0
    reply = stack.get("/beta/x", token)
    assert {k.lower(): v for k, v in reply.body["headers"].items()}["x-pavilion-tenant"] == "beta"
    assert stack.get("/api/x", token).status == 403  # beta's token is not demo's route's
    wait_for(lambda: len(set(stack.versions().values())) == 1, 5, "every part on the edited version")
    assert stack.versions()["controlplane"] != versions_before["controlplane"]
    assert stack.launcher.pids() == before and all(r.alive() for r in stack.launcher.running)
    assert _envoy_uptime(stack) >= uptime  # the same Envoy process, never restarted
    time.sleep(0.1)


def _envoy_uptime(stack: Stack) -> int:
    text = stack.envoy_admin("/stats?filter=server.uptime").body.get("text", "")
    return int(text.split(":")[1])
