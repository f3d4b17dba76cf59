"""Header and query conditions through the real Envoy, fed by the control plane: routes that differ only
by a query parameter (exact, present, regex) or a header condition (prefix, suffix, contains, regex,
present, absent) reach different upstreams; more conditions win over fewer, headers before query."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

UPSTREAMS = {"query": "eu-west", "header": "eu-west", "plain": "eu-west"}

# Each route names itself in `x-route`; the upstream's name says which service took the request.
CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {listen}}}
services:
  - {{name: query, endpoints: [{{address: 127.0.0.1:{query}, region: eu-west}}]}}
  - {{name: header, endpoints: [{{address: 127.0.0.1:{header}, region: eu-west}}]}}
  - {{name: plain, endpoints: [{{address: 127.0.0.1:{plain}, region: eu-west}}]}}
routes:
  - name: view-full
    match: {{prefix: /items, query: {{view: full}}}}
    service: query
    response_headers: {{add: {{x-route: view-full}}}}
  - name: debug
    match: {{prefix: /items, query: {{debug: {{present: true}}}}}}
    service: query
    response_headers: {{add: {{x-route: debug}}}}
  - name: numeric-id
    match: {{prefix: /items, query: {{id: {{regex: "[0-9]+"}}, lang: {{prefix: en}}}}}}
    service: query
    response_headers: {{add: {{x-route: numeric-id}}}}
  - name: mobile
    match: {{prefix: /items, headers: {{x-client: {{prefix: mobile-}}}}}}
    service: header
    response_headers: {{add: {{x-route: mobile}}}}
  - name: pdf
    match: {{prefix: /items, headers: {{x-file: {{suffix: .pdf}}, accept: {{contains: json}}}}}}
    service: header
    response_headers: {{add: {{x-route: pdf}}}}
  - name: versioned
    match: {{prefix: /items, headers: {{x-version: {{regex: "v[0-9]+"}}}}}}
    service: header
    response_headers: {{add: {{x-route: versioned}}}}
  - name: items
    match: {{prefix: /items}}
    service: plain
    response_headers: {{add: {{x-route: items}}}}
  - name: beta-off
    match: {{prefix: /beta, headers: {{x-beta: {{present: false}}}}}}
    service: plain
    response_headers: {{add: {{x-route: beta-off}}}}
  - name: beta-on
    match: {{prefix: /beta, headers: {{x-beta: {{present: true}}}}}}
    service: header
    response_headers: {{add: {{x-route: beta-on}}}}
"""


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def gateway(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """The stack with an Envoy on State of the World ADS, then one on Delta ADS (virtual hosts over VHDS)."""
    config_dir: Path = tmp_path_factory.mktemp("match")
    listen = free_port()
    upstreams = start_upstreams(UPSTREAMS)
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    (config_dir / "gateway.yaml").write_text(CONFIG.format(listen=listen, **ports))
    with running_gateway(config_dir, listen, upstreams, delta=request.param) as gw:
        gw.plane.wait_synced(1)
        yield gw


def taken_by(gateway: Gateway, path: str, **headers: str) -> tuple[str, str]:
    """(route, upstream) of a GET; ("404", "") when no route matches."""
    reply = gateway.get(path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    if reply.status == 404:
        return "404", ""
    assert reply.status == 200, (path, reply)
    return reply.headers["x-route"], reply.served_by


def test_envoy_accepts_the_translated_config(gateway: Gateway) -> None:
    assert check_with_envoy(load_config(gateway.plane.config_dir), ENVOY) == []


def test_routes_differing_only_by_a_query_parameter(gateway: Gateway) -> None:
    assert taken_by(gateway, "/items/1?view=full") == ("view-full", "query")
    assert taken_by(gateway, "/items/1?view=fullish") == ("items", "plain")  # exact is exact
    assert taken_by(gateway, "/items/1?a=b&view=full") == ("view-full", "query")
    assert taken_by(gateway, "/items/1?view=full&view=short") == ("view-full", "query")  # the first counts
    assert taken_by(gateway, "/items/1?view=short&view=full") == ("items", "plain")
    assert taken_by(gateway, "/items/1?debug=1") == ("debug", "query")
    assert taken_by(gateway, "/items/1?debug") == ("debug", "query")  # present, without a value
    assert taken_by(gateway, "/items/1?id=42&lang=en-GB") == ("numeric-id", "query")
    assert taken_by(gateway, "/items/1?id=42x&lang=en-GB") == ("items", "plain")  # the regex is a full match
    assert taken_by(gateway, "/items/1?id=42&lang=fr") == ("items", "plain")  # both conditions must hold
    assert taken_by(gateway, "/items/1") == ("items", "plain")


def test_routes_differing_only_by_a_header_condition(gateway: Gateway) -> None:
    assert taken_by(gateway, "/items", x_client="mobile-ios") == ("mobile", "header")
    assert taken_by(gateway, "/items", x_client="desktop-mobile-") == ("items", "plain")
    assert taken_by(gateway, "/items", x_file="a.pdf", accept="application/json") == ("pdf", "header")
    assert taken_by(gateway, "/items", x_file="a.pdf.txt", accept="application/json") == ("items", "plain")
    assert taken_by(gateway, "/items", x_file="a.pdf", accept="text/html") == ("items", "plain")
    assert taken_by(gateway, "/items", x_version="v12") == ("versioned", "header")
    assert taken_by(gateway, "/items", x_version="v12-beta") == ("items", "plain")


def test_an_absent_header_condition(gateway: Gateway) -> None:
    assert taken_by(gateway, "/beta") == ("beta-off", "plain")
    assert taken_by(gateway, "/beta", x_beta="1") == ("beta-on", "header")
    assert taken_by(gateway, "/beta", x_beta="") == ("beta-on", "header")  # sent empty is still sent


def test_more_conditions_win_and_headers_before_query(gateway: Gateway) -> None:
    # pdf has two header conditions, mobile one: a request meeting both goes to pdf.
    both = {"x_client": "mobile-ios", "x_file": "a.pdf", "accept": "json"}
    assert taken_by(gateway, "/items", **both) == ("pdf", "header")
    # A header condition comes before a query condition, whatever the route names.
    assert taken_by(gateway, "/items?view=full", x_client="mobile-ios") == ("mobile", "header")
    # Two query conditions before one.
    assert taken_by(gateway, "/items?id=7&lang=en&view=full") == ("numeric-id", "query")
