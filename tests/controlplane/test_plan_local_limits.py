"""`pavilion plan` shows a new `local_rate_limit` before it is applied: the listener gains the filters, the
route table the route's bucket, each as a diff of the text proto."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from controlplane.cache import Group, SnapshotCache, config_version
from controlplane.config.load import parse_sources
from controlplane.config.model import Config
from controlplane.plan import ServedResources, plan
from controlplane.translate import translate, translate_regional
from pavilion.config_files import Source

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8080
{guard}services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - name: accounts
    match: {{prefix: /}}
    service: accounts
{limit}"""


def load(guard: str = "", limit: str = "") -> Config:
    text = CONFIG.format(guard=f"    local_rate_limit: {guard}\n" if guard else "",
                         limit=f"    local_rate_limit: {limit}\n" if limit else "")
    return parse_sources([Source("gateway.yaml", text)])


async def test_plan_shows_the_local_limits_a_config_would_add() -> None:
    served = load()
    cache = SnapshotCache(translate, regional=translate_regional)
    await cache.install(served, config_version(served))
    await cache.snapshot(Group("eu-west", "edge"))
    app = web.Application()
    app.add_routes(ServedResources(cache).routes())
    async with TestServer(app, host="127.0.0.1") as server:
        planned = load("{per: client_ip, unit: second, requests: 50, burst: 100}", "{unit: minute, requests: 7}")
        result = await asyncio.to_thread(plan, planned, f"127.0.0.1:{server.port}", "edge")
        unchanged = await asyncio.to_thread(plan, served, f"127.0.0.1:{server.port}", "edge")
    found = result["regions"]["eu-west"]
    assert found["changed"] == ["Listener/public", "RouteConfiguration/public"]
    listener = found["diffs"]["Listener/public"]
    for added in ('name: "pavilion.listener_local_ratelimit"', 'name: "envoy.filters.http.local_ratelimit"',
                  "max_dynamic_descriptors"):
        assert _added(listener, added), added
    route = found["diffs"]["RouteConfiguration/public"]
    assert _added(route, 'key: "envoy.filters.http.local_ratelimit"') and _added(route, "max_tokens: 7")
    assert unchanged["regions"]["eu-west"]["changed"] == []


def _added(diff: str, text: str) -> bool:
    return any(line.startswith("+") and text in line for line in diff.splitlines())
