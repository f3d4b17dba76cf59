"""The whole gateway under steady load (about 80 requests a second, every answer counted) while one part
fails: Redis, the control plane, ext_authz, or a broken config edit. Each test asserts what a
client saw, following the configured failure answers of examples like `make run`'s:

- `/public` (`auth: none`, a per-client-ip limit with `on_backend_error: allow`): ext_authz is not
  asked; the ratelimit service allows when Redis is down.
- `/strict` (the same with `on_backend_error: deny`): 429 while Redis is down.
- `/api` (tenant `demo`, `on_store_error: deny`): a token is checked on every request, with a
  revocation lookup; Redis down means 503, ext_authz down means 503 (never a pass).
- ratelimit down: Envoy's `failure_mode_deny: false` (the `ratelimit:` section's default) lets
  requests through unlimited.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.e2e_stack import Stack, SteadyLoad, running_stack, wait_for

pytestmark = pytest.mark.integration
SETTLE = 1.5  # seconds for a failure to be noticed (revocation cache 1 s, subscription loss)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("resilience")) as running:
        yield running


@pytest.fixture(autouse=True)
def whole_again(stack: Stack) -> Iterator[None]:
    """A test that fails between a kill and its restart must not fail the tests after it."""
    yield
    stack.ensure_all_running()


def load(stack: Stack) -> SteadyLoad:
    token = stack.token("load", ttl=900)
    return SteadyLoad(stack.url(""), [("/public/p", None), ("/api/a", token)], rate=80)


def _others(counts: Any, allowed: set[int]) -> dict[int, int]:
    return {status: n for status, n in counts.items() if status not in allowed}


def test_redis_killed_and_restarted(stack: Stack) -> None:
    token = stack.token("load", ttl=900)
    targets = [("/public/p", None), ("/strict/s", None), ("/api/a", token)]
    with SteadyLoad(stack.url(""), targets, rate=90) as traffic:
        time.sleep(1.0)
        traffic.mark("kill")
        stack.kill("redis")
        time.sleep(SETTLE)
        traffic.mark("settled")
        time.sleep(2.0)
        traffic.mark("restart")
        stack.restart("redis")
        wait_for(lambda: stack.get("/api/a", stack.token("probe")).status == 200, 15, "protected routes back")
        wait_for(lambda: stack.get("/strict/s").status == 200, 15, "deny-on-error limits counting again")
        traffic.mark("recovered")
        time.sleep(1.5)
        traffic.mark("end")
    public = traffic.statuses("/public")
    assert public.keys() == {200}, (public, traffic.failures())  # on_backend_error allow: always served
    before = traffic.statuses("/api", None, "kill")
    assert before.keys() == {200}, (before, [t for t in traffic.timeline("/api", "kill") if t[2] != 200])
    down = traffic.statuses("/api", "settled", "restart")
    leaks = [t for t in traffic.timeline("/api", "kill") if t[2] == 200 and t[0] > SETTLE]
    assert down[503] > 0 and _others(down, {503}) == {}, (down, leaks)  # on_store_error deny: refused
    assert _others(traffic.statuses("/api", "kill", "recovered"), {200, 503}) == {}  # decided answers only
    assert traffic.statuses("/api", "recovered", "end").keys() == {200}
    strict = traffic.statuses("/strict", "settled", "restart")
    assert strict[429] > 0 and _others(strict, {429}) == {}, strict  # on_backend_error deny: refused as over limit
    assert traffic.statuses("/strict", None, "kill").keys() == {200}
    assert traffic.statuses("/strict", "recovered", "end").keys() == {200}, traffic.failures()


def test_control_plane_killed_and_restarted_without_churn(stack: Stack) -> None:
    before_versions = _envoy_versions(stack)
    kinds = {key.split("/")[0] for key, version in before_versions.items() if version}
    assert {"ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"} <= kinds, before_versions
    before_stats = _listener_stats(stack)
    before_parts = stack.versions()
    with load(stack) as traffic:
        time.sleep(1.0)
        stack.kill("controlplane")
        time.sleep(2.0)
        stack.restart("controlplane")
        wait_for(lambda: _synced(stack), 30, "every node reconnected and synced")
        time.sleep(1.0)
    total = traffic.statuses()
    assert total.keys() == {200}, (total, traffic.failures())  # zero failed requests
    assert sum(total.values()) > 250
    assert _envoy_versions(stack) == before_versions  # the same config, not re-sent as new
    assert stack.versions() == before_parts  # ext_authz and ratelimit too
    after_stats = _listener_stats(stack)
    for name in ("listener_added", "listener_modified", "listener_removed", "total_filter_chains_draining"):
        assert after_stats.get(name) == before_stats.get(name), (name, before_stats, after_stats)


def test_ext_authz_killed_refuses_everything_then_recovers(stack: Stack) -> None:
    with load(stack) as traffic:
        time.sleep(1.0)
        traffic.mark("kill")
        stack.kill("extauthz")
        time.sleep(2.5)
        traffic.mark("restart")
        stack.restart("extauthz")
        wait_for(lambda: stack.get("/api/a", stack.token("probe")).status == 200, 20, "ext_authz answering")
        traffic.mark("recovered")
        time.sleep(1.5)
        traffic.mark("end")
    outage = traffic.statuses("/api", "kill", "restart")
    assert outage[200] == 0 and sum(outage.values()) > 50, outage  # none let through
    assert _others(outage, {403, 503}) == {}, outage
    coming_back = traffic.statuses("/api", "restart", "recovered")
    assert _others(coming_back, {200, 503}) == {}, coming_back
    assert traffic.statuses("/api", "recovered", "end").keys() == {200}
    public = traffic.statuses("/public")
    assert public.keys() == {200}, (public, traffic.failures())  # auth: none never asks ext_authz


def test_ratelimit_killed_fails_open_as_configured(stack: Stack) -> None:
    """`ratelimit.failure_mode_deny: false`: without the service, limits stop and nothing is refused."""
    with load(stack) as traffic:
        time.sleep(1.0)
        traffic.mark("kill")
        stack.kill("ratelimit")
        time.sleep(2.0)
        traffic.mark("restart")
        stack.restart("ratelimit")
        time.sleep(1.0)
    assert traffic.statuses().keys() == {200}, (traffic.statuses(), traffic.failures())
    assert sum(traffic.statuses(None, "kill", "restart").values()) > 100
    assert stack.get("/public/p").headers.get("ratelimit")  # asked again once back


def test_a_broken_config_edit_fails_no_request(stack: Stack) -> None:
    routes = stack.config_dir / "routes.yaml"
    good = routes.read_text()
    try:
        with load(stack) as traffic:
            time.sleep(1.0)
            routes.write_text(good.replace("service: app", "service: no-such-service", 1))
            wait_for(lambda: stack.controlplane_status().get("last_rejected") is not None, 10, "the edit rejected")
            time.sleep(1.5)
            routes.write_text(good)
            time.sleep(1.0)
    finally:
        routes.write_text(good)
    rejected = stack.controlplane_status()["last_rejected"]
    assert "no-such-service" in str(rejected)
    assert traffic.statuses().keys() == {200}, (traffic.statuses(), traffic.failures())


def _envoy_versions(stack: Stack) -> dict[str, str]:
    dump = stack.envoy_admin("/config_dump").body
    versions: dict[str, str] = {}
    for config in dump["configs"]:
        kind = config["@type"].rsplit(".", 1)[-1]
        for key in ("dynamic_active_clusters", "dynamic_listeners", "dynamic_route_configs"):
            for item in config.get(key, []):
                state = item.get("active_state", item)
                name = state.get("listener", state.get("cluster", state.get("route_config", {}))).get("name", "")
                versions[f"{kind}/{name}"] = state.get("version_info", "")
    return versions


def _listener_stats(stack: Stack) -> dict[str, int]:
    text = stack.envoy_admin("/stats?filter=^listener_manager\\.").body.get("text", "")
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name.removeprefix("listener_manager.")] = int(value)
    return stats


def _synced(stack: Stack) -> bool:
    status = stack.controlplane_status()
    # The Envoy edge, ext_authz and ratelimit: all three back on a stream and acked.
    return bool(status.get("synced")) and len(status.get("nodes", [])) >= 3
