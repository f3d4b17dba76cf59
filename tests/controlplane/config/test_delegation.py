"""`delegations:`: a team's files stay inside the hosts and paths handed to them, and hold only services and
routes; everything outside is refused with the file and line, naming the delegation."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config.delegation import regex_under
from controlplane.config.load import load_config, parse_sources
from controlplane.config.model import Config
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import make_ca

PLATFORM = """
regions: [local]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services:
  - {name: authz, protocol: grpc, endpoints: [{address: 127.0.0.1:9191, region: local}]}
  - {name: accounts, endpoints: [{address: 127.0.0.1:9001, region: local}]}
extauthz: {service: authz}
tenants:
  - {id: acme, issuer: https://idp.acme.test, audiences: [api], jwks: {inline: {keys: []}}}
routes:
  - {name: accounts-admin, match: {prefix: /v1/accounts/admin}, service: accounts}
delegations:
  - files: [teams/payments/]
    hosts: [api.example.com, "*.pay.example.com"]
    paths: [/v1/payments/, /v2/payments/]
  - files: [teams/status-*.yaml]
    hosts: ["*"]
    paths: [/status]
    services: [accounts]
    public: true
"""

PAYMENTS = """
services:
  - {name: payments, endpoints: [{address: 127.0.0.1:9002, region: local}]}
routes:
  - name: payments
    hosts: [api.example.com, eu.pay.example.com]
    match: {prefix: /v1/payments/}
    service: payments
  - name: refunds
    hosts: [api.example.com]
    match: {regex: "/v2/payments/[0-9]+/refunds(/.*)?"}
    service: payments
"""


def load(files: dict[str, str]) -> Config:
    return parse_sources([Source(f"/conf/{name}", text) for name, text in sorted(files.items())])


def errors(files: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(files)
    return [str(e) for e in caught.value.errors]


def test_routes_inside_their_delegation_load() -> None:
    config = load({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": PAYMENTS,
                   "teams/status-page.yaml": "routes: [{name: status, match: {path: /status}, service: accounts, "
                                             "auth: none}]"})
    assert {r.name for r in config.routes} == {"accounts-admin", "payments", "refunds", "status"}


def test_a_longer_prefix_cannot_take_another_teams_path() -> None:
    hijack = PAYMENTS.replace("match: {prefix: /v1/payments/}", "match: {prefix: /v1/accounts/admin/users}")
    assert errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": hijack}) == [
        "/conf/teams/payments/routes.yaml:7:21: routes[payments].match.prefix: '/v1/accounts/admin/users' is outside "
        "the delegated paths /v1/payments/, /v2/payments/ (delegation at /conf/platform.yaml:13:5)"]


def test_hosts_must_lie_inside_the_delegated_ones() -> None:
    text = PAYMENTS.replace("hosts: [api.example.com, eu.pay.example.com]", "hosts: [admin.example.com]")
    text = text.replace("    hosts: [api.example.com]\n", "")
    assert errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text}) == [
        "/conf/teams/payments/routes.yaml:6:12: routes[payments].hosts: 'admin.example.com' is outside the delegated "
        "hosts api.example.com, *.pay.example.com (delegation at /conf/platform.yaml:13:5)",
        "/conf/teams/payments/routes.yaml:9:5: routes[refunds].hosts: '*' is outside the delegated hosts "
        "api.example.com, *.pay.example.com; give the route `hosts` (delegation at /conf/platform.yaml:13:5)"]


def test_a_delegated_file_holds_only_services_and_routes() -> None:
    text = PAYMENTS + """
tenants:
  - {id: mine, issuer: https://idp.mine.test, audiences: [api], jwks: {inline: {keys: []}}}
regions: [elsewhere]
"""
    found = errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text})
    assert found == [
        "/conf/teams/payments/routes.yaml:15:3: tenants: a delegated file holds only services and routes; "
        "`tenants` is the platform's (delegation at /conf/platform.yaml:13:5)",
        "/conf/teams/payments/routes.yaml:16:10: regions: a delegated file holds only services and routes; "
        "`regions` is the platform's (delegation at /conf/platform.yaml:13:5)"]


def test_public_routes_need_public_true() -> None:
    text = PAYMENTS.replace("    service: payments\n  - name: refunds", "    service: payments\n    auth: none\n"
                                                                         "  - name: refunds")
    assert errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text}) == [
        "/conf/teams/payments/routes.yaml:9:11: routes[payments].auth: `none` (public) is not delegated; the "
        "delegation would need `public: true` (delegation at /conf/platform.yaml:13:5)"]


def test_a_regex_with_a_top_level_alternative_is_refused() -> None:
    text = PAYMENTS.replace('"/v2/payments/[0-9]+/refunds(/.*)?"', '"/v2/payments/x|/v1/accounts/admin"')
    assert errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text}) == [
        "/conf/teams/payments/routes.yaml:11:20: routes[refunds].match.regex: cannot tell that every path it matches "
        "starts with one of /v1/payments/, /v2/payments/; begin it with one of them literally and keep any `|` "
        "inside a group (delegation at /conf/platform.yaml:13:5)"]


def test_a_route_sends_only_to_its_teams_services_or_those_lent() -> None:
    """Else `/v1/payments/admin` could reach the accounts service with payments' `auth`, skipping the scope
    accounts-admin requires."""
    text = PAYMENTS.replace("    service: payments\n  - name: refunds", "    service: accounts\n  - name: refunds")
    assert errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text}) == [
        "/conf/teams/payments/routes.yaml:8:14: routes[payments].service: 'accounts' is another team's or the "
        "platform's service; a delegated route sends to its own files' services or those in the delegation's "
        "`services` (delegation at /conf/platform.yaml:13:5)"]
    lent = PLATFORM.replace("    paths: [/v1/payments/, /v2/payments/]\n",
                            "    paths: [/v1/payments/, /v2/payments/]\n    services: [accounts]\n")
    assert load({"platform.yaml": lent, "teams/payments/routes.yaml": text}).routes


def test_identity_audiences_are_delegated() -> None:
    """The team's upstream receives the assertion: with another audience, it could replay it there."""
    auth = "    auth: {tenants: [acme], identity: {audience: accounts-api}}\n"
    text = PAYMENTS.replace("    service: payments\n  - name: refunds",
                            f"    service: payments\n{auth}  - name: refunds")
    assert errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text}) == [
        "/conf/teams/payments/routes.yaml:9:50: routes[payments].auth.identity.audience: 'accounts-api' is not in the "
        "delegation's `audiences` (delegation at /conf/platform.yaml:13:5)"]
    granted = PLATFORM.replace("    paths: [/v1/payments/, /v2/payments/]\n",
                               "    paths: [/v1/payments/, /v2/payments/]\n    audiences: [payments-api]\n")
    own = text.replace("audience: accounts-api", "audience: payments-api")
    assert load({"platform.yaml": granted, "teams/payments/routes.yaml": own}).routes


def test_a_file_named_by_two_delegations_is_refused() -> None:
    platform = PLATFORM + """  - files: [teams/payments/routes.yaml]
    hosts: ["*"]
    paths: [/]
"""
    assert errors({"platform.yaml": platform, "teams/payments/routes.yaml": PAYMENTS}) == [
        "/conf/teams/payments/routes.yaml:2:1: this file is delegated twice: at /conf/platform.yaml:13:5 and at "
        "/conf/platform.yaml:21:5"]


def test_a_delegated_file_cannot_delegate() -> None:
    text = PAYMENTS + "delegations: [{files: [x.yaml], hosts: ['*'], paths: [/]}]\n"
    found = errors({"platform.yaml": PLATFORM, "teams/payments/routes.yaml": text})
    assert found == ["/conf/teams/payments/routes.yaml:13:14: delegations: a delegated file holds only services "
                     "and routes; `delegations` is the platform's (delegation at /conf/platform.yaml:13:5)"]


def test_files_outside_every_delegation_are_the_platforms() -> None:
    config = load({"platform.yaml": PLATFORM, "more/regions.yaml": "regions: [elsewhere]"})
    assert set(config.regions) == {"local", "elsewhere"}


@pytest.mark.parametrize("pattern", ["/abs.yaml", "../up.yaml", "teams/../x.yaml", "./x.yaml", "a\\b.yaml"])
def test_file_patterns_stay_below_the_declaring_folder(pattern: str) -> None:
    platform = PLATFORM.replace("files: [teams/payments/]", f"files: ['{pattern}']")
    found = errors({"platform.yaml": platform})
    assert len(found) == 1 and found[0].startswith("/conf/platform.yaml:13:13: delegations[0].files[0]: ")


@pytest.mark.parametrize(("regex", "under"), [
    ("/v1/payments/[0-9]+", True),
    ("^/v1/payments/.*$", True),
    ("/v1/payments/(a|b)", True),
    ("/v1/payments/[|)]x", True),  # '|' and ')' inside a class are plain characters
    ("/v1/payments/[]|]x", True),  # a ']' first in a class is plain too
    ("/v1/payments/x|/admin", False),
    ("/v1/payments/[)]|/admin", False),
    ("/v1/payments/\\(|/admin", False),  # an escaped '(' opens no group
    ("/v1/payments/\\Q)\\E|/admin", False),
    ("/v1/payments/[[:alpha:]]|/admin", False),
    ("/v1/payments?", False),  # the last character of the prefix made optional
    ("/v1/payment", False),
    ("(?i)/v1/payments/x", False),
    ("/v1/payments/x)|(/admin", False),
])
def test_regex_under(regex: str, under: bool) -> None:
    assert regex_under(regex, "/v1/payments/") is under


def test_a_dot_in_the_prefix_must_be_escaped() -> None:
    assert regex_under("/v1\\.2/x", "/v1.2/")
    assert not regex_under("/v1.2/x", "/v1.2/")  # '.' matches any character: '/v1x2/x' too


def test_a_real_directory(tmp_path: Path) -> None:
    (tmp_path / "teams" / "payments").mkdir(parents=True)
    (tmp_path / "platform.yaml").write_text(PLATFORM)
    (tmp_path / "teams" / "payments" / "routes.yaml").write_text(
        PAYMENTS.replace("match: {prefix: /v1/payments/}", "match: {prefix: /v1/accounts/}"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path)
    assert [str(e) for e in caught.value.errors] == [
        f"{tmp_path}/teams/payments/routes.yaml:7:21: routes[payments].match.prefix: '/v1/accounts/' is outside the "
        f"delegated paths /v1/payments/, /v2/payments/ (delegation at {tmp_path}/platform.yaml:13:5)"]


def test_a_teams_tls_files_lie_in_its_own_folder(tmp_path: Path) -> None:
    """Else its service could show Envoy's client certificate for the platform (the gateway's identity) to
    any host the team names."""
    ca = make_ca("Internal CA")
    team = tmp_path / "teams" / "payments"
    (team / "tls").mkdir(parents=True)
    (team / "tls" / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "platform-ca.pem").write_bytes(ca.pem)
    (tmp_path / "platform.yaml").write_text(PLATFORM)
    service = ("  - {name: payments, endpoints: [{address: 127.0.0.1:9002, region: local}], "
               "tls: {ca: %s, server_name: payments.internal}}\n")
    original = PAYMENTS.splitlines()[2] + "\n"
    (team / "routes.yaml").write_text(PAYMENTS.replace(original, service % "tls/ca.pem"))
    assert load_config(tmp_path).service("payments").tls is not None
    (team / "routes.yaml").write_text(PAYMENTS.replace(original, service % "../../platform-ca.pem"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path)
    assert [str(e) for e in caught.value.errors] == [
        f"{team}/routes.yaml:3:5: services[payments].tls: '{team}/../../platform-ca.pem' lies outside this file's "
        f"folder; a delegated file's TLS files are its own (delegation at {tmp_path}/platform.yaml:13:5)"]
    (team / "tls" / "link.pem").symlink_to(tmp_path / "platform-ca.pem")  # a link out is outside too
    (team / "routes.yaml").write_text(PAYMENTS.replace(original, service % "tls/link.pem"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path)
    assert "lies outside this file's folder" in str(caught.value.errors[0])


def test_endpoints_lie_in_the_delegated_networks() -> None:
    fenced = PLATFORM.replace("    paths: [/v1/payments/, /v2/payments/]\n",
                              "    paths: [/v1/payments/, /v2/payments/]\n    networks: [10.20.0.0/16, 'fd00::/8']\n")
    inside = PAYMENTS.replace("127.0.0.1:9002", "10.20.3.4:9002")
    assert load({"platform.yaml": fenced, "teams/payments/routes.yaml": inside}).service("payments")
    assert errors({"platform.yaml": fenced, "teams/payments/routes.yaml": PAYMENTS}) == [
        "/conf/teams/payments/routes.yaml:3:5: services[payments].endpoints: endpoint 127.0.0.1:9002 is outside the "
        "delegated networks 10.20.0.0/16, fd00::/8 (delegation at /conf/platform.yaml:13:5)"]
    assert errors({"platform.yaml": fenced.replace("10.20.0.0/16", "10.20.0.1/16")}) == [
        "/conf/platform.yaml:16:16: delegations[0].networks[0]: '10.20.0.1/16' has host bits set: write "
        "'10.20.0.0/16' for the network it lies in, or '10.20.0.1' alone for that one address"]


def test_routes_serve_only_on_the_delegated_listeners() -> None:
    two = PLATFORM.replace("listeners: [{name: public, address: 127.0.0.1, port: 10080}]",
                           "listeners: [{name: public, address: 127.0.0.1, port: 10080}, "
                           "{name: internal, address: 127.0.0.1, port: 10081}]")
    two = two.replace("{name: accounts-admin, match", "{name: accounts-admin, listener: internal, match")
    fenced = two.replace("    paths: [/v1/payments/, /v2/payments/]\n",
                         "    paths: [/v1/payments/, /v2/payments/]\n    listeners: [public]\n")
    team = PAYMENTS.replace("  - name: payments\n", "  - name: payments\n    listener: internal\n")
    team = team.replace("  - name: refunds\n", "  - name: refunds\n    listener: public\n")
    assert errors({"platform.yaml": fenced, "teams/payments/routes.yaml": team}) == [
        "/conf/teams/payments/routes.yaml:6:15: routes[payments].listener: 'internal' is not among the delegated "
        "listeners public (delegation at /conf/platform.yaml:13:5)"]
    assert load({"platform.yaml": two, "teams/payments/routes.yaml": team}).routes  # absent: any listener
