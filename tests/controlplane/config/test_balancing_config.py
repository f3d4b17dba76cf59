"""Services' `load_balancing` and routes' `hash_on`: what loads into the model, and every refusal as a
`FILE:LINE:COL: path: message` (a hash_on that would do nothing, on a route that answers itself...)."""

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
  - {name: plain, endpoints: [{address: 127.0.0.1:9001, region: eu-west}]}
  - {name: ring, load_balancing: ring_hash, endpoints: [{address: 127.0.0.1:9002, region: eu-west}]}
  - {name: table, load_balancing: maglev, endpoints: [{address: 127.0.0.1:9003, region: eu-west}]}
  - {name: least, load_balancing: least_request, endpoints: [{address: 127.0.0.1:9004, region: eu-west}]}
routes:
"""


def load(routes: str, base: str = BASE) -> model.Config:
    return parse_sources([Source("gateway.yaml", base + routes)])


def errors_of(routes: str, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(routes, base)
    return [str(e) for e in caught.value.errors]


def schema_errors(routes: str) -> list[str]:
    document = YAML(typ="safe", pure=True).load(BASE + routes)
    return [e.message for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(document)]


def test_load_balancing_defaults_to_round_robin_and_is_kept() -> None:
    config = load("  - {name: a, match: {prefix: /}, service: plain}\n")
    assert {s.name: s.load_balancing for s in config.services} == {
        "plain": "round_robin", "ring": "ring_hash", "table": "maglev", "least": "least_request"}


def test_unknown_load_balancing_is_refused_with_a_suggestion() -> None:
    base = BASE.replace("load_balancing: maglev", "load_balancing: maglav")
    (error,) = errors_of("  - {name: a, match: {prefix: /}, service: plain}\n", base)
    assert error.startswith("gateway.yaml:7:35: services[table].load_balancing: 'maglav' is not one of ")
    assert "did you mean 'maglev'?" in error


def test_hash_on_loads_every_kind_of_key_in_order() -> None:
    (route,) = load("""  - name: sticky
    match: {prefix: /}
    service: ring
    hash_on:
      - {header: X-Session}
      - {cookie: {name: Sid, ttl: 1h, path: /app}}
      - {cookie: {name: session-only, ttl: 0s}}
      - {cookie: {name: read-only}}
      - {query: user}
      - {source_ip: true}
""").routes
    assert route.hash_on == (
        model.HashKey("header", "x-session"),  # header names are kept in lower case
        model.HashKey("cookie", "Sid", 3600.0, "/app"),  # cookie names are case-sensitive: kept as written
        model.HashKey("cookie", "session-only", 0.0),
        model.HashKey("cookie", "read-only"),
        model.HashKey("query", "user"),
        model.HashKey("source_ip"),
    )


def test_hash_on_is_fine_with_maglev_and_with_backends_all_hashed() -> None:
    config = load("""  - {name: a, match: {prefix: /a}, service: table, hash_on: [{header: x-s}]}
  - name: b
    match: {prefix: /b}
    backends: [{service: ring, weight: 50}, {service: table, weight: 50}]
    hash_on: [{source_ip: true}]
""")
    assert [r.hash_on for r in config.routes] == [(model.HashKey("header", "x-s"),), (model.HashKey("source_ip"),)]


@pytest.mark.parametrize("service", ["plain", "least"])
def test_hash_on_needs_a_hash_balanced_service(service: str) -> None:
    balancing = "round_robin" if service == "plain" else "least_request"
    (error,) = errors_of(f"""  - name: a
    match: {{prefix: /}}
    service: {service}
    hash_on: [{{header: x-session}}]
""")
    assert error == (f"gateway.yaml:13:14: routes[a].hash_on: hash_on needs service {service!r} to balance by hash "
                     f"(`load_balancing: ring_hash` or `maglev`); it uses {balancing}, which ignores the hash, so "
                     "requests would not stick to a host")


def test_hash_on_names_each_backend_that_is_not_hash_balanced() -> None:
    errors = errors_of("""  - name: a
    match: {prefix: /}
    backends: [{service: plain, weight: 40}, {service: ring, weight: 30}, {service: least, weight: 30}]
    hash_on: [{header: x-session}]
""")
    assert [e.split(": ", 2)[1] for e in errors] == ["routes[a].hash_on", "routes[a].hash_on"]
    assert "service 'plain'" in errors[0] and "service 'least'" in errors[1]


def test_hash_on_a_service_of_another_file() -> None:
    other = Source("teams/pay.yaml", """services:
  - {name: pay, load_balancing: ring_hash, endpoints: [{address: 127.0.0.1:9010, region: eu-west}]}
""")
    routes = Source("teams/routes.yaml", """routes:
  - {name: pay, match: {prefix: /pay}, service: pay, hash_on: [{header: x-session}]}
""")
    config = parse_sources([Source("gateway.yaml", BASE.removesuffix("routes:\n")), other, routes])
    assert config.routes[0].hash_on == (model.HashKey("header", "x-session"),)


@pytest.mark.parametrize("answer", ["direct_response: {status: 200}", "redirect: {https: true}"])
def test_hash_on_is_refused_on_a_route_that_answers_itself(answer: str) -> None:
    (error,) = errors_of(f"""  - name: a
    match: {{prefix: /}}
    {answer}
    hash_on: [{{source_ip: true}}]
""")
    kind = answer.split(":", 1)[0]
    assert error == f"gateway.yaml:13:14: routes[a].hash_on: hash_on applies to a route that calls a service, " \
                    f"not to a {kind}"


@pytest.mark.parametrize(("entry", "message"), [
    ("{source_ip: false}", "hash_on[0].source_ip: false hashes on nothing; leave the entry out"),
    ("{cookie: {name: sid, path: /}}", "hash_on[0].cookie.path: path applies to the cookie Envoy sets, which "
                                       "needs `ttl`"),
    ("{cookie: {name: 'a b', ttl: 1h}}", "hash_on[0].cookie.name: 'a b' is not a valid cookie name"),
    ("{cookie: {name: sid, ttl: 1 hour}}", "hash_on[0].cookie.ttl: '1 hour' is not a duration"),
    ("{header: x-a, query: b}", "hash_on[0]: give only one of header, cookie, source_ip or query (found header and "
                                "query)"),
    ("{}", "hash_on[0]: give one of header, cookie, source_ip or query"),
    ("{query: ''}", "hash_on[0].query: a query parameter name holds 1 to 1024 bytes"),
    ("{header: 'x y'}", "hash_on[0].header: 'x y' is not a valid header name"),
])
def test_bad_hash_on_entries(entry: str, message: str) -> None:
    (error,) = errors_of(f"""  - name: a
    match: {{prefix: /}}
    service: ring
    hash_on: [{entry}]
""")
    assert error.split(": ", 1)[1].startswith(f"routes[a].{message}"), error


def test_the_schema_agrees_on_the_shape() -> None:
    good = """  - {name: a, match: {prefix: /}, service: ring, hash_on: [{header: x}, {cookie: {name: s, ttl: 0s}}]}
"""
    assert schema_errors(good) == []
    assert schema_errors("  - {name: a, match: {prefix: /}, service: ring, hash_on: [{source_ip: false}]}\n")
    assert schema_errors("  - {name: a, match: {prefix: /}, service: ring, hash_on: [{header: x, query: y}]}\n")
    assert schema_errors("  - {name: a, match: {prefix: /}, service: ring, hash_on: []}\n")
