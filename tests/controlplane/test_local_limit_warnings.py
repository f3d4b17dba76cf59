"""`pavilion validate`/`plan` warn when a route's local limit is really one bucket per virtual host."""

from __future__ import annotations

from controlplane.config.load import parse_sources
from controlplane.config_warnings import config_warnings
from controlplane.local_limit_warnings import local_limit_warnings
from pavilion.config_files import Source

BASE = """regions: [r]
listeners: [{name: l, address: 127.0.0.1, port: 8080}, {name: m, address: 127.0.0.1, port: 8081}]
services: [{name: a, endpoints: [{address: 127.0.0.1:2, region: r}]}]
routes:
  - name: star
    listener: l
    match: {prefix: /}
    service: a
    local_rate_limit: {unit: second, requests: 50}
"""
NAMED = "  - {{name: named, listener: {listener}, hosts: {hosts}, match: {{prefix: /n}}, service: a}}\n"


def warnings(routes: str) -> list[str]:
    return local_limit_warnings(parse_sources([Source("gateway.yaml", BASE + routes)]))


def test_a_route_in_several_virtual_hosts_is_warned_about_at_its_limit() -> None:
    found = warnings(NAMED.format(listener="l", hosts="[api.example.com, b.example.com]")
                     + NAMED.format(listener="l", hosts="[c.example.com]").replace("named", "other"))
    assert found == [
        "gateway.yaml:9:23: warning: route star's local_rate_limit is one bucket per virtual host, and the route is "
        "in 3 of listener l (*, api.example.com, c.example.com): up to 150 requests per second in all, not 50; give "
        "it `hosts` that no other route's hosts overlap, or limit the whole listener"]
    config = parse_sources([Source("gateway.yaml", BASE + NAMED.format(listener="l", hosts="[x.example]"))])
    assert local_limit_warnings(config)[0] in config_warnings(config)


def test_no_warning_when_the_route_is_in_one_virtual_host() -> None:
    # Alone on its listener; other hosts on another listener; a named route with a limit beside a `*` one.
    assert warnings("") == []
    assert warnings(NAMED.format(listener="m", hosts="[api.example.com]")) == []
    assert warnings("""  - name: named
    listener: m
    hosts: [api.example.com]
    match: {prefix: /n}
    service: a
    local_rate_limit: {unit: second, requests: 5}
  - {name: any, listener: m, match: {prefix: /}, service: a}
""") == []
