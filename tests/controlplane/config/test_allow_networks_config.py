"""`allow_networks` of listeners and routes: what loads into the model (IPv4, IPv6, a bare address as its
/32 or /128), every refusal as `FILE:LINE:COL: path: message`, a route that could never admit anyone on
its listener, and a delegated team's route narrowing who may call it."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.networks import network
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import make_ca, write_pair
from tests.controlplane.config.test_delegation import PAYMENTS, PLATFORM
from tests.controlplane.config.test_delegation import load as load_delegated

BASE = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10080
{listener}services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - name: admin
    listener: public
    match: {{prefix: /v1/admin}}
    service: accounts
{route}"""


def text(listener: str = "", route: str = "") -> str:
    return BASE.format(listener=f"    allow_networks: {listener}\n" if listener else "",
                       route=f"    allow_networks: {route}\n" if route else "")


def load(listener: str = "", route: str = "") -> model.Config:
    return parse_sources([Source("gateway.yaml", text(listener, route))])


def errors_of(listener: str = "", route: str = "") -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(listener, route)
    return [str(e) for e in caught.value.errors]


def route(config: model.Config, name: str) -> model.Route:
    return next(r for r in config.routes if r.name == name)


def nets(*texts: str) -> tuple[model.IPNetwork, ...]:
    return tuple(ip_network(t) for t in texts)


def test_absent_admits_any_client() -> None:
    config = load()
    assert config.listener("public").allow_networks == ()
    assert route(config, "admin").allow_networks == ()


def test_networks_load_in_order_a_bare_address_being_one_host() -> None:
    config = load(route="[10.0.0.0/8, 192.0.2.7, '2001:db8::/32', '2001:DB8:1::1']")
    assert route(config, "admin").allow_networks == nets("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32",
                                                        "2001:db8:1::1/128")


def test_a_listener_and_a_route_inside_it() -> None:
    config = load(listener="[10.0.0.0/8, 'fd00::/8']", route="[10.20.0.0/16]")
    assert config.listener("public").allow_networks == nets("10.0.0.0/8", "fd00::/8")
    assert route(config, "admin").allow_networks == nets("10.20.0.0/16")
    # A wider network than the listener's loads too: Envoy admits only what is in both.
    assert route(load(listener="[10.20.0.0/16]", route="[10.0.0.0/8]"), "admin").allow_networks == nets("10.0.0.0/8")


@pytest.mark.parametrize(("listener", "route", "expected"), [
    ("", "[10.0.0.1/8]",
     "gateway.yaml:14:22: routes[admin].allow_networks[0]: '10.0.0.1/8' has host bits set: write '10.0.0.0/8' for "
     "the network it lies in, or '10.0.0.1' alone for that one address"),
    ("", "[office.example.com]",
     "gateway.yaml:14:22: routes[admin].allow_networks[0]: 'office.example.com' is not a network like 10.0.0.0/8 or "
     "2001:db8::/32, nor an address"),
    ("", "[10.0.0.0/33]", "routes[admin].allow_networks[0]: '10.0.0.0/33' is not a network like 10.0.0.0/8"),
    ("", "['2001:db8::1/32']", "routes[admin].allow_networks[0]: '2001:db8::1/32' has host bits set: write "
                               "'2001:db8::/32'"),
    ("", "[8]", "routes[admin].allow_networks[0]: expected a string"),
    ("", "[]", "gateway.yaml:14:21: routes[admin].allow_networks: "),
    ("", "[10.0.0.0/8, 192.0.2.7, 10.0.0.0/8]",
     "gateway.yaml:14:45: routes[admin].allow_networks[2]: network '10.0.0.0/8' is listed twice (first at "
     "gateway.yaml:14:22)"),
    ("", "[192.0.2.7, 192.0.2.7/32]", "routes[admin].allow_networks[1]: network '192.0.2.7/32' is listed twice"),
    ("[10.0.0.0/8, 10.0.0.0/8]", "", "gateway.yaml:6:34: listeners[public].allow_networks[1]: network '10.0.0.0/8' "
                                     "is listed twice"),
    ("[10.0.0.1/8]", "", "gateway.yaml:6:22: listeners[public].allow_networks[0]: '10.0.0.1/8' has host bits set"),
    ("[]", "", "gateway.yaml:6:21: listeners[public].allow_networks: "),
    ("[10.0.0.0/8]", "[10.20.0.0/16, 192.168.0.0/16]",
     "gateway.yaml:15:36: routes[admin].allow_networks[1]: network 192.168.0.0/16 lies outside listener 'public''s "
     "allow_networks (10.0.0.0/8): Envoy admits a request only from both lists"),
    ("[10.0.0.0/8]", "['fd00::/8']", "routes[admin].allow_networks[0]: network fd00::/8 lies outside listener"),
])
def test_refusals_point_at_the_field(listener: str, route: str, expected: str) -> None:
    found = errors_of(listener, route)
    assert len(found) == 1, found
    assert found[0].startswith("gateway.yaml:")
    assert expected in found[0], found


def test_not_on_a_redirect_listener(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, *make_ca().issue("edge"))
    source = text().replace("    port: 10080\n", f"    port: 10080\n    tls: {{certificate: {cert}, key: {key}}}\n"
                            "  - {name: plain, address: 127.0.0.1, port: 10081, redirect_to_https: public,\n"
                            "     allow_networks: [10.0.0.0/8]}\n")
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("gateway.yaml", source)])
    assert [str(e) for e in caught.value.errors] == [
        "gateway.yaml:8:22: listeners[plain].allow_networks: a redirect_to_https listener answers every request "
        "itself (a 301, no filter runs): put allow_networks on the https listener"]


def test_the_one_reader_of_a_network() -> None:
    assert network("10.1.0.0/16") == ip_network("10.1.0.0/16")
    assert network("::1") == ip_network("::1/128")
    with pytest.raises(ValueError, match=r"host bits set: write '172\.16\.0\.0/12'"):
        network("172.16.5.4/12")


def test_a_delegated_team_may_narrow_its_route() -> None:
    """Nothing to fence: a route's networks only take callers away."""
    narrowed = PAYMENTS.replace(
        "    match: {prefix: /v1/payments/}\n",
        "    match: {prefix: /v1/payments/}\n    allow_networks: [10.8.0.0/16, 'fd00:8::/32']\n")
    config = load_delegated({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": narrowed})
    assert route(config, "payments").allow_networks == nets("10.8.0.0/16", "fd00:8::/32")
    assert route(config, "refunds").allow_networks == ()
