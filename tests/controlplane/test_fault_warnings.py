"""`pavilion validate`/`plan` warn about a fault that aborts every request of a route for everyone, and
about a header gate ext_authz fills from a tenant's claim."""

from __future__ import annotations

from controlplane.config.load import parse_sources
from controlplane.config_warnings import config_warnings
from controlplane.fault_warnings import fault_warnings
from pavilion.config_files import Source

BASE = """regions: [r]
listeners: [{name: l, address: 127.0.0.1, port: 8080}]
services:
  - {name: a, endpoints: [{address: 127.0.0.1:2, region: r}]}
  - {name: authz, protocol: grpc, endpoints: [{address: 127.0.0.1:3, region: r}]}
extauthz: {service: authz}
tenants:
  - {id: acme, issuer: https://idp.acme.test, audiences: [api], jwks: {inline: {keys: []}},
     claims_to_headers: {team: x-team}}
routes:
"""


def warnings(fault: str) -> list[str]:
    config = parse_sources([Source("gateway.yaml", BASE + f"  - {{name: down, match: {{prefix: /}}, service: a, "
                                                          f"fault: {fault}}}\n")])
    found = fault_warnings(config)
    assert all(line in config_warnings(config) for line in found)
    return found


def test_a_fault_aborting_every_request_for_everyone_is_warned_about() -> None:
    assert warnings("{abort: {status: 503, percent: 100}}") == [
        "gateway.yaml:11:57: warning: route down's fault aborts 100% of its requests (HTTP 503) and none reaches its "
        "service: left in by mistake? Gate it with `only_with_header`, or lower `abort.percent`"]


def test_a_gated_or_partial_abort_or_a_delay_is_not() -> None:
    assert warnings("{abort: {status: 503, percent: 100}, only_with_header: x-chaos}") == []
    assert warnings("{abort: {status: 503, percent: 99.9999}}") == []
    assert warnings("{delay: {duration: 200ms, percent: 100}}") == []


def test_a_gate_on_a_header_ext_authz_sets_from_a_claim_is_warned_about() -> None:
    assert warnings("{delay: {duration: 1s, percent: 10}, only_with_header: X-Team}") == [
        "gateway.yaml:11:57: warning: route down's fault only_with_header x-team is set by ext_authz from tenant "
        "acme's claim team: every request of that tenant would be faulted; name a header only your test clients "
        "send"]
