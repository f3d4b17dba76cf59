"""A route's `fault`: a delay and/or an abort, each with a percent read as the mirrors' are, an optional
header gate; refused with FILE:LINE:COL and the field when the values or the route do not fit."""

from __future__ import annotations

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors
from tests.controlplane.config.test_delegation import PAYMENTS, PLATFORM
from tests.controlplane.config.test_delegation import load as load_files

BASE = """regions: [eu]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services:
  - {name: web, endpoints: [{address: 127.0.0.1:8080, region: eu}]}
  - {name: rpc, protocol: grpc, endpoints: [{address: 127.0.0.1:8081, region: eu}]}
routes:
"""


def route(extra: str) -> str:
    return BASE + "  - {name: a, match: {prefix: /a}, " + extra + "}\n"


def fault_of(extra: str) -> model.Fault | None:
    return parse_sources([Source("f.yaml", route(extra))]).routes[0].fault


def messages(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("f.yaml", text)])
    return [str(error) for error in caught.value.errors]


def test_a_delay_and_an_abort_with_a_header_gate() -> None:
    fault = fault_of("service: web, fault: {delay: {duration: 200ms, percent: 50}, "
                     "abort: {status: 503, percent: 0.5}, only_with_header: X-Chaos-Test}")
    assert fault == model.Fault(delay=0.2, delay_per_million=500_000, abort_status=503, abort_per_million=5000,
                                only_with_header="x-chaos-test")
    assert fault.aborts


def test_either_alone_and_grpc_status_on_a_grpc_service() -> None:
    assert fault_of("service: web, fault: {delay: {duration: 1.5s, percent: 100}}") == model.Fault(
        delay=1.5, delay_per_million=1_000_000)
    grpc = fault_of("service: rpc, fault: {abort: {grpc_status: 14, percent: 0}}")
    assert grpc == model.Fault(abort_grpc_status=14, abort_per_million=0)
    assert grpc.aborts
    assert fault_of("service: web") is None


@pytest.mark.parametrize(("extra", "expected"), [
    ("service: web, fault: {abort: {status: 503, percent: 100.5}}",
     "f.yaml:7:88: routes[a].fault.abort.percent: must be a percent from 0 to 100, got 100.5"),
    ("service: web, fault: {abort: {status: 503, percent: 0.00005}}",
     "f.yaml:7:88: routes[a].fault.abort.percent: 0.00005 has more than 4 decimals; Envoy counts faulted requests "
     "per million"),
    ("service: web, fault: {abort: {status: 199, percent: 5}}",
     "f.yaml:7:74: routes[a].fault.abort.status: must be at least 200 and at most 599"),
    ("service: web, fault: {abort: {status: 600, percent: 5}}",
     "f.yaml:7:74: routes[a].fault.abort.status: must be at most 599"),
    ("service: web, fault: {abort: {percent: 5}}",
     "f.yaml:7:65: routes[a].fault.abort: give one of status or grpc_status"),
    ("service: rpc, fault: {abort: {status: 503, grpc_status: 14, percent: 5}}",
     "f.yaml:7:79: routes[a].fault.abort: give only one of status or grpc_status"),
    ("service: rpc, fault: {abort: {grpc_status: 0, percent: 5}}",
     "f.yaml:7:79: routes[a].fault.abort.grpc_status: must be at least 1 and at most 16"),
    ("service: web, fault: {abort: {grpc_status: 14, percent: 5}}",
     "f.yaml:7:79: routes[a].fault.abort.grpc_status: service 'web' speaks http1, not gRPC"),
    ("service: web, fault: {abort: {status: 503}}",
     "f.yaml:7:65: routes[a].fault.abort.percent: required field 'percent' is missing"),
    ("service: web, fault: {delay: {duration: 0s, percent: 5}}",
     "f.yaml:7:76: routes[a].fault.delay.duration: '0s' is shorter than 1ms"),
    ("service: web, fault: {delay: {duration: -1s, percent: 5}}",
     "f.yaml:7:76: routes[a].fault.delay.duration: '-1s' is not a duration"),
    ("service: web, fault: {delay: {duration: 1500us, percent: 5}}",
     "f.yaml:7:76: routes[a].fault.delay.duration: '1500us' is not a whole number of milliseconds"),
    ("service: web, fault: {delay: {duration: 5m, percent: 5}}",
     "f.yaml:7:76: routes[a].fault.delay.duration: '5m' is not shorter than 300s"),
    ("service: web, fault: {only_with_header: x-chaos}",
     "f.yaml:7:57: routes[a].fault: give at least one of delay or abort; a fault needs a `delay`, an `abort` or both"),
    ("service: web, fault: {abort: {status: 503, percent: 5}, only_with_header: x-envoy-fault-abort-request}",
     "f.yaml:7:110: routes[a].fault.only_with_header: 'x-envoy-fault-abort-request' is one of Envoy's own headers"),
    ("service: web, fault: {abort: {status: 503, percent: 5}, only_with_header: X-Request-Id}",
     "f.yaml:7:110: routes[a].fault.only_with_header: 'x-request-id' is on every request Envoy passes on"),
    ("service: web, fault: {abort: {status: 503, percent: 5}, only_with_header: ':authority'}",
     "f.yaml:7:110: routes[a].fault.only_with_header: ':authority' is on every request (a pseudo-header"),
    ("direct_response: {status: 204}, fault: {abort: {status: 503, percent: 5}}",
     "f.yaml:7:75: routes[a].fault: fault applies to a route that calls a service, not to a direct_response"),
    ("redirect: {https: true}, fault: {delay: {duration: 1s, percent: 5}}",
     "f.yaml:7:68: routes[a].fault: fault applies to a route that calls a service, not to a redirect"),
])
def test_refusals_name_the_field_and_place(extra: str, expected: str) -> None:
    found = messages(route(extra))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_delegated_team_may_fault_its_own_routes() -> None:
    faulted = PAYMENTS.replace("    service: payments\n  - name: refunds",
                               "    service: payments\n    fault: {abort: {status: 503, percent: 10}, "
                               "only_with_header: x-chaos}\n  - name: refunds")
    assert faulted != PAYMENTS
    config = load_files({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": faulted})
    (payments,) = [r for r in config.routes if r.name == "payments"]
    assert payments.fault == model.Fault(abort_status=503, abort_per_million=100_000, only_with_header="x-chaos")


@pytest.mark.parametrize(("fault", "valid"), [
    ("{delay: {duration: 200ms, percent: 0.5}, abort: {status: 503, percent: 100}, only_with_header: x-chaos}", True),
    ("{abort: {grpc_status: 14, percent: 5}}", True),
    ("{abort: {status: 503, percent: 101}}", False),
    ("{abort: {status: 700, percent: 5}}", False),
    ("{abort: {status: 503, grpc_status: 14, percent: 5}}", False),
    ("{delay: {duration: soon, percent: 5}}", False),
    ("{only_with_header: x-chaos}", False),
])
def test_the_editor_schema_agrees(fault: str, valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = YAML(typ="safe", pure=True).load(route(f"service: web, fault: {fault}"))
    assert (not list(validator.iter_errors(document))) is valid
