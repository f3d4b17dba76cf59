"""`local_rate_limit` of listeners and routes: what loads into the model (defaults included), and every
refusal as a `FILE:LINE:COL: path: message`; the JSON Schema agrees where a schema can say it."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import make_ca, write_pair

BASE = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10080
{listener}services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - name: a
    match: {{prefix: /a}}
    service: accounts
{route}"""


def text(listener: str = "", route: str = "") -> str:
    return BASE.format(listener=f"    local_rate_limit: {listener}\n" if listener else "",
                       route=f"    local_rate_limit: {route}\n" if route else "")


def load(listener: str = "", route: str = "") -> model.Config:
    return parse_sources([Source("gateway.yaml", text(listener, route))])


def errors_of(listener: str = "", route: str = "") -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(listener, route)
    return [str(e) for e in caught.value.errors]


def test_a_route_limit_loads_with_its_defaults() -> None:
    (route,) = load(route="{unit: minute, requests: 10}").routes
    assert route.local_rate_limit == model.LocalRateLimit(requests=10, unit="minute", burst=10)
    assert route.local_rate_limit.max_client_ips == 10_000 and not route.local_rate_limit.shadow_mode
    assert route.local_rate_limit.source.line == 13


def test_a_listener_guard_per_client_ip_loads_every_field() -> None:
    config = load(listener="{per: client_ip, unit: second, requests: 50, burst: 100, max_client_ips: 500, "
                           "shadow_mode: true}")
    assert config.listeners[0].local_rate_limit == model.LocalRateLimit(
        requests=50, unit="second", burst=100, per_client_ip=True, max_client_ips=500, shadow_mode=True)
    assert config.routes[0].local_rate_limit is None


def test_without_local_rate_limit_nothing_changes() -> None:
    config = load()
    assert config.listeners[0].local_rate_limit is None and config.routes[0].local_rate_limit is None


def test_local_limits_need_neither_ratelimit_nor_extauthz() -> None:
    # The whole point: Envoy alone enforces them (no `ratelimit:` section in BASE).
    assert load(route="{per: client_ip, unit: hour, requests: 1}").routes[0].local_rate_limit is not None


@pytest.mark.parametrize("fact", ["tenant", "client", "subject"])
def test_token_facts_are_refused_with_the_reason(fact: str) -> None:
    assert errors_of(route=f"{{per: {fact}, unit: second, requests: 5}}") == [
        f"gateway.yaml:13:29: routes[a].local_rate_limit.per: a local limit cannot count per {fact}: Envoy knows "
        f"the {fact} only after ext_authz has checked the token, and a local limit runs before ext_authz to spare "
        "it the work; use `per: client_ip` here, or count per token facts in `rate_limits`"]


def test_a_list_of_facts_is_not_a_local_per() -> None:
    (error,) = errors_of(route="{per: [client_ip], unit: second, requests: 5}")
    assert error.startswith("gateway.yaml:13:29: routes[a].local_rate_limit.per: ")


@pytest.mark.parametrize(("value", "message"), [
    ("{unit: second, requests: 10, burst: 9}",
     "13:59: routes[a].local_rate_limit.burst: burst (9) is smaller than requests (10): the bucket must hold at "
     "least one unit's requests"),
    ("{unit: week, requests: 10}", "13:30: routes[a].local_rate_limit.unit: 'week' is not one of second, minute, hour"),
    ("{unit: second, requests: 0}",
     "13:48: routes[a].local_rate_limit.requests: must be at least 1 and at most 4294967295"),
    ("{unit: second}", "13:23: routes[a].local_rate_limit.requests: required field 'requests' is missing"),
    ("{unit: second, requests: 5, max_client_ips: 9}",
     "13:67: routes[a].local_rate_limit.max_client_ips: max_client_ips applies to `per: client_ip` only"),
    ("{per: client_ip, unit: second, requests: 5, max_client_ips: 0}",
     "13:83: routes[a].local_rate_limit.max_client_ips: must be at least 1 and at most 1000000"),
    ("{unit: second, requests: 5, algorithm: token_bucket}",
     "13:51: routes[a].local_rate_limit.algorithm: unknown field 'algorithm'"),
])
def test_bad_values_name_the_place(value: str, message: str) -> None:
    assert errors_of(route=value) == [f"gateway.yaml:{message}"]


def test_the_listener_guard_is_checked_the_same_way() -> None:
    assert errors_of(listener="{per: subject, unit: second, requests: 5, burst: 1}") == [
        "gateway.yaml:6:29: listeners[public].local_rate_limit.per: a local limit cannot count per subject: Envoy "
        "knows the subject only after ext_authz has checked the token, and a local limit runs before ext_authz to "
        "spare it the work; use `per: client_ip` here, or count per token facts in `rate_limits`",
        "gateway.yaml:6:72: listeners[public].local_rate_limit.burst: burst (1) is smaller than requests (5): the "
        "bucket must hold at least one unit's requests",
    ]


def test_a_redirect_to_https_listener_takes_no_guard(tmp_path: Path) -> None:
    write_pair(tmp_path, *make_ca("CA").issue("localhost"))
    config = f"""regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10443
    tls: {{certificate: {tmp_path}/edge.pem, key: {tmp_path}/edge-key.pem}}
  - name: plain
    address: 127.0.0.1
    port: 10080
    redirect_to_https: public
    local_rate_limit: {{unit: second, requests: 9}}
"""
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("gateway.yaml", config)])
    assert [str(e) for e in caught.value.errors] == [
        "gateway.yaml:11:23: listeners[plain].local_rate_limit: a redirect_to_https listener answers every request "
        "itself (a 301, nothing else runs): put local_rate_limit on the https listener"]


def _schema_errors(source: str) -> list[str]:
    document = YAML(typ="safe", pure=True).load(source)
    return [e.message for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(document)]


def test_the_schema_accepts_good_limits_and_refuses_token_facts_and_long_units() -> None:
    assert _schema_errors(text("{per: client_ip, unit: second, requests: 50, burst: 100}",
                               "{unit: hour, requests: 1, shadow_mode: true}")) == []
    assert _schema_errors(text(route="{per: tenant, unit: second, requests: 5}"))
    assert _schema_errors(text(route="{unit: day, requests: 5}"))
    assert _schema_errors(text(route="{unit: second, requests: 0}"))
