"""Route `mirrors` and `websocket`: what loads into the model, and every refusal as a
`FILE:LINE:COL: path: message` naming what to change."""

from __future__ import annotations

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

BASE = """regions: [eu-west]
listeners:
  - {name: public, address: 127.0.0.1, port: 10080}
services:
  - {name: accounts, endpoints: [{address: 127.0.0.1:9001, region: eu-west}]}
  - {name: accounts-next, endpoints: [{address: 127.0.0.1:9002, region: eu-west}]}
  - {name: audit, endpoints: [{address: 127.0.0.1:9003, region: eu-west}]}
  - {name: grpc-api, protocol: grpc, endpoints: [{address: 127.0.0.1:9004, region: eu-west}]}
routes:
"""


def load(routes: str, base: str = BASE) -> model.Config:
    return parse_sources([Source("gateway.yaml", base + routes)])


def errors_of(routes: str, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(routes, base)
    return [str(e) for e in caught.value.errors]


def test_mirrors_load_with_percent_per_million() -> None:
    (route,) = load("  - name: accounts\n    match: {prefix: /v1/accounts}\n    service: accounts\n"
                    "    mirrors: [{service: accounts-next}, {service: audit, percent: 0.5}]\n").routes
    assert route.mirrors == (model.Mirror("accounts-next", 1_000_000), model.Mirror("audit", 5_000))
    assert not route.websocket


@pytest.mark.parametrize(("written", "per_million"), [
    ("0", 0), ("100", 1_000_000), ("12.5", 125_000), ("0.0001", 1), ("99.9999", 999_999), ("1e1", 100_000)])
def test_percent_spellings(written: str, per_million: int) -> None:
    (route,) = load("  - {name: r, match: {prefix: /}, service: accounts, "
                    f"mirrors: [{{service: audit, percent: {written}}}]}}\n").routes
    assert route.mirrors == (model.Mirror("audit", per_million),)


@pytest.mark.parametrize(("percent", "message"), [
    ("101", "must be a percent from 0 to 100, got 101"),
    ("-1", "must be a percent from 0 to 100, got -1"),
    (".nan", "must be a percent from 0 to 100, got .nan"),
    ("0.00001", "0.00001 has more than 4 decimals; Envoy counts mirrored requests per million"),
    ("'50'", "expected a percent from 0 to 100 (like 100 or 0.5), got a string ('50')"),
    ("true", "expected a percent from 0 to 100 (like 100 or 0.5), got a boolean (true)"),
])
def test_a_bad_percent_is_refused_where_it_is_written(percent: str, message: str) -> None:
    assert errors_of("  - name: r\n    match: {prefix: /}\n    service: accounts\n"
                     f"    mirrors: [{{service: audit, percent: {percent}}}]\n") == [
        f"gateway.yaml:13:41: routes[r].mirrors[0].percent: {message}"]


def test_mirror_services_must_exist_once_and_not_be_the_routes_own() -> None:
    assert errors_of("""  - name: r
    match: {prefix: /}
    backends: [{service: accounts, weight: 90}, {service: accounts-next, weight: 10}]
    mirrors:
      - {service: audit}
      - {service: audit, percent: 5}
      - {service: accounts-next}
      - {service: audti}
""") == [
        "gateway.yaml:15:19: routes[r].mirrors[1].service: service 'audit' is mirrored twice "
        "(first at gateway.yaml:14:19)",
        "gateway.yaml:16:19: routes[r].mirrors[2].service: service 'accounts-next' is the route's own: "
        "every mirrored request would reach it twice",
        "gateway.yaml:17:19: routes[r].mirrors[3].service: unknown service 'audti'; did you mean 'audit'?",
    ]


@pytest.mark.parametrize("answer", ["redirect: {https: true}", "direct_response: {status: 204}"])
def test_mirrors_need_a_route_that_calls_a_service(answer: str) -> None:
    kind = answer.split(":", 1)[0]
    assert errors_of(f"  - name: r\n    match: {{prefix: /}}\n    {answer}\n    mirrors: [{{service: audit}}]\n") == [
        f"gateway.yaml:13:14: routes[r].mirrors: mirrors copy requests sent to a service; a {kind} route calls none"]


def test_websocket_loads_and_keeps_the_timeout() -> None:
    (route,) = load("  - {name: chat, match: {prefix: /chat}, service: accounts, websocket: true, timeout: 5s}\n"
                    ).routes
    assert route.websocket and route.timeout == 5.0
    (plain,) = load("  - {name: r, match: {prefix: /}, service: accounts, websocket: false}\n").routes
    assert not plain.websocket


def test_a_websocket_is_not_mirrored() -> None:
    assert errors_of("  - name: chat\n    match: {prefix: /chat}\n    service: accounts\n    websocket: true\n"
                     "    mirrors: [{service: audit}]\n") == [
        "gateway.yaml:14:14: routes[chat].mirrors: a websocket cannot be mirrored: the mirror would get the upgrade "
        "request alone and hold a connection open, never the messages; mirror a route without `websocket`"]


def test_websocket_refusals() -> None:
    assert errors_of("""  - name: redirected
    match: {prefix: /old}
    redirect: {https: true}
    websocket: true
  - name: retried
    match: {prefix: /chat}
    service: accounts
    websocket: true
    retries: {attempts: 2}
  - name: grpc
    match: {prefix: /grpc}
    backends: [{service: accounts, weight: 50}, {service: grpc-api, weight: 50}]
    websocket: true
""") == [
        "gateway.yaml:13:16: routes[redirected].websocket: a redirect route answers by itself; a websocket needs a "
        "service to upgrade to",
        "gateway.yaml:18:14: routes[retried].retries: retries do not apply to a websocket: an upgraded connection "
        "cannot be replayed; leave retries out (or keep plain requests on a route of their own)",
        "gateway.yaml:22:16: routes[grpc].websocket: service 'grpc-api' speaks grpc; a websocket is upgraded from "
        "HTTP/1.1, so its service needs `protocol: http1`",
    ]


def test_websocket_false_goes_with_anything() -> None:
    (route,) = load("  - {name: r, match: {prefix: /}, redirect: {https: true}, websocket: false}\n").routes
    assert not route.websocket


def test_websocket_must_be_a_boolean() -> None:
    assert errors_of("  - {name: r, match: {prefix: /}, service: accounts, websocket: yes}\n") == [
        "gateway.yaml:10:65: routes[r].websocket: expected a boolean (true or false), got a string ('yes')"]


DELEGATED = """regions: [eu-west]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services:
  - {name: audit, endpoints: [{address: 127.0.0.1:9003, region: eu-west}]}
delegations:
  - {files: [teams/], hosts: ["*"], paths: [/pay/], public: true}
"""
TEAM = """services:
  - {name: pay, endpoints: [{address: 127.0.0.1:9005, region: eu-west}]}
  - {name: pay-next, endpoints: [{address: 127.0.0.1:9006, region: eu-west}]}
routes:
  - name: pay
    match: {prefix: /pay/}
    service: pay
    auth: none
    mirrors: [{service: pay-next}, {service: audit}]
"""


def test_a_delegated_route_mirrors_only_to_its_teams_services() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("/conf/platform.yaml", DELEGATED), Source("/conf/teams/pay.yaml", TEAM)])
    assert [str(e) for e in caught.value.errors] == [
        "/conf/teams/pay.yaml:9:14: routes[pay].mirrors: 'audit' is another team's or the platform's service; a "
        "delegated route mirrors to its own files' services or those in the delegation's `services` (delegation "
        "at /conf/platform.yaml:6:5)"]
    lent = DELEGATED.replace("public: true}", "public: true, services: [audit]}")
    config = parse_sources([Source("/conf/platform.yaml", lent), Source("/conf/teams/pay.yaml", TEAM)])
    assert [m.service for m in config.routes[0].mirrors] == ["pay-next", "audit"]


@pytest.mark.parametrize(("route", "valid"), [
    ("  - {name: r, match: {prefix: /}, service: accounts, mirrors: [{service: audit, percent: 0.5}]}\n", True),
    ("  - {name: r, match: {prefix: /}, service: accounts, mirrors: [{service: audit}], websocket: false}\n", True),
    ("  - {name: r, match: {prefix: /}, service: accounts, websocket: true}\n", True),
    ("  - {name: r, match: {prefix: /}, service: accounts, mirrors: [{service: audit, percent: 101}]}\n", False),
    ("  - {name: r, match: {prefix: /}, service: accounts, mirrors: [{service: audit, percent: '5'}]}\n", False),
    ("  - {name: r, match: {prefix: /}, service: accounts, mirrors: [{percent: 5}]}\n", False),
    ("  - {name: r, match: {prefix: /}, service: accounts, mirrors: []}\n", False),
    ("  - {name: r, match: {prefix: /}, service: accounts, websocket: 'true'}\n", False),
])
def test_the_editor_schema_agrees(route: str, valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = YAML(typ="safe", pure=True).load(BASE + route)
    assert (not list(validator.iter_errors(document))) is valid
