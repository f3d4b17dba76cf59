"""Route `auth.client_certificates` and `token`: what loading yields, and each mistake as
`FILE:LINE:COL: routes[NAME].auth...: message` (entries, duplicates, a listener that verifies no client
certificates, a token requirement with `token: false`), with the JSON Schema agreeing on entries."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from controlplane.config.load import load_config
from controlplane.config.model import ClientCertificate, RouteAuth
from controlplane.config.schema import json_schema
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import Ca, make_ca, write_pair

BILLING = "spiffe://pavilion.example/ns/partners/sa/billing"

# The route's `auth:` is on line 22 (19 without extauthz and its tenant); as a block, its first entry on 24.
SETUP = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8443
    tls: {{certificate: tls/edge.pem, key: tls/edge-key.pem{client_ca}}}
  - {{name: plain, address: 127.0.0.1, port: 8080}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
  - name: authz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:9191, region: eu-west}}]
{extauthz}routes:
  - name: partners
    listener: {listener}
    match: {{prefix: /v1/partners}}
    service: accounts
{auth}"""
EXTAUTHZ = """extauthz: {service: authz}
tenants:
  - {id: acme, issuer: https://idp.acme.test, audiences: [api], jwks: {uri: https://idp.acme.test/jwks}}
"""


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def write(directory: Path, ca: Ca, auth: str, *, client_ca: bool = True, extauthz: bool = True,
          listener: str = "public") -> Path:
    tls = directory / "tls"
    if not tls.exists():
        write_pair(tls, *ca.issue("localhost"))
        (tls / "clients-ca.pem").write_bytes(ca.pem)
    (directory / "gateway.yaml").write_text(SETUP.format(
        client_ca=", client_ca: tls/clients-ca.pem" if client_ca else "", extauthz=EXTAUTHZ if extauthz else "",
        listener=listener, auth=auth))
    return directory


def auth_of(directory: Path) -> RouteAuth | None:
    return load_config(directory).routes[0].auth


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(directory)
    prefix = f"{directory / 'gateway.yaml'}:"
    return [str(e).removeprefix(prefix) for e in caught.value.errors]


def test_each_kind_of_entry(tmp_path: Path, ca: Ca) -> None:
    auth = auth_of(write(tmp_path, ca, "    auth:\n      client_certificates:\n"
                                       f"        - {BILLING}\n"
                                       "        - spiffe://pavilion.example/ns/ops/*\n"
                                       "        - Billing.Partners.Example\n"
                                       "        - '*.clients.example'\n"
                                       "        - HTTPS://id.example/app\n"))
    assert auth is not None
    assert auth.client_certificates == (
        ClientCertificate("uri", BILLING),
        ClientCertificate("uri", "spiffe://pavilion.example/ns/ops/", wildcard=True),
        ClientCertificate("dns", "billing.partners.example"),  # DNS names compare without case
        ClientCertificate("dns", "clients.example", wildcard=True),
        ClientCertificate("uri", "https://id.example/app"),  # the scheme in lower case
    )
    assert [c.text for c in auth.client_certificates][1:4] == [
        "spiffe://pavilion.example/ns/ops/*", "billing.partners.example", "*.clients.example"]
    # Alone, a certificate is asked for on top of a token of any tenant: ext_authz still checks one.
    assert auth.token is True and auth.asks_token and auth.tenants == ()


def test_certificate_and_token_requirements_together(tmp_path: Path, ca: Ca) -> None:
    auth = auth_of(write(tmp_path, ca, f"    auth: {{tenants: [acme], scopes: [billing:read], "
                                       f"client_certificates: [{BILLING}]}}\n"))
    assert auth == RouteAuth(("acme",), ("billing:read",), client_certificates=(ClientCertificate("uri", BILLING),))
    assert auth.asks_token


def test_token_false_asks_for_the_certificate_alone_and_needs_no_ext_authz(tmp_path: Path, ca: Ca) -> None:
    auth = auth_of(write(tmp_path, ca, f"    auth: {{client_certificates: [{BILLING}], token: false}}\n",
                         extauthz=False))
    assert auth == RouteAuth(client_certificates=(ClientCertificate("uri", BILLING),), token=False)
    assert not auth.asks_token and not auth.public


@pytest.mark.parametrize(("entry", "message"), [
    ("spiffe://Pavilion.example/ns/a", "a SPIFFE trust domain holds only lower-case letters, digits, '.', '-' and '_'"),
    ("spiffe://pavilion.example/ns//a", "a SPIFFE ID's path segments are non-empty"),
    ("spiffe://pavilion.example/ns/../a", "a SPIFFE ID's path segments are non-empty"),
    ("spiffe://pavilion.example/ns/a/", "a SPIFFE ID's path segments are non-empty"),
    ("spiffe://pavilion.example/ns/a?x=1", "a SPIFFE ID's path segments are non-empty"),
    ("spiffe:///ns/a", "names no host or trust domain after spiffe://"),
    ("spiffe://pavilion.example/ns/*/sa/b", "`*` may only end a URI, after a '/'"),
    ("spiffe://pavilion.example/ns/part*", "`*` may only end a URI, after a '/'"),
    ("'billing partners.example'", "holds a space or control character"),
    ("billing.partners.example/x", "is neither a URI (scheme://..., like spiffe://example.org/ns/a/sa/b) nor a DNS"),
    ("'*.example'", "a `*.` name needs two labels or more after it"),
    ("'a.*.example'", "is not a DNS name like billing.partners.example (`*` only as `*.` in front, for any one label)"),
    ("-billing.example", "is not a DNS name like billing.partners.example"),
    ("10.0.0.7", "is an IP address: name a client by its certificate's URI SAN (a SPIFFE ID) or DNS SAN"),
])
def test_a_malformed_entry_is_named_at_its_line(tmp_path: Path, ca: Ca, entry: str, message: str) -> None:
    errors = errors_of(write(tmp_path, ca, f"    auth:\n      client_certificates:\n        - {entry}\n"))
    assert len(errors) == 1, errors
    assert errors[0].startswith("24:11: routes[partners].auth.client_certificates[0]: ")
    assert message in errors[0]


def test_a_duplicate_is_named_with_where_it_first_was(tmp_path: Path, ca: Ca) -> None:
    directory = write(tmp_path, ca, "    auth:\n      client_certificates:\n"
                                    f"        - {BILLING}\n        - billing.partners.example\n"
                                    f"        - {BILLING}\n        - BILLING.partners.example\n")
    path = directory / "gateway.yaml"
    assert errors_of(directory) == [
        f"26:11: routes[partners].auth.client_certificates[2]: client certificate {BILLING!r} is listed twice "
        f"(first at {path}:24:11)",
        "27:11: routes[partners].auth.client_certificates[3]: client certificate 'billing.partners.example' is "
        f"listed twice (first at {path}:25:11)",
    ]


def test_a_listener_without_client_ca_is_an_error(tmp_path: Path, ca: Ca) -> None:
    directory = write(tmp_path, ca, f"    auth: {{client_certificates: [{BILLING}], token: false}}\n", client_ca=False)
    assert errors_of(directory) == [
        "22:33: routes[partners].auth.client_certificates: client_certificates need a listener that verifies client "
        "certificates; listener 'public' has no `tls.client_ca`, so Envoy never holds a verified one (add "
        "`client_ca` to its `tls`)"]


def test_a_plaintext_listener_is_an_error(tmp_path: Path, ca: Ca) -> None:
    directory = write(tmp_path, ca, f"    auth: {{client_certificates: [{BILLING}]}}\n", listener="plain")
    assert errors_of(directory) == [
        "22:33: routes[partners].auth.client_certificates: client_certificates need a listener that verifies client "
        "certificates; listener 'plain' has no `tls`, so Envoy never holds a verified one (add `client_ca` to its "
        "`tls`)"]


def test_token_false_with_what_a_token_holds_is_an_error(tmp_path: Path, ca: Ca) -> None:
    directory = write(tmp_path, ca, "    auth:\n      tenants: [acme]\n      scopes: [invoices:read]\n"
                                    f"      client_certificates: [{BILLING}]\n      token: false\n")
    assert errors_of(directory) == [
        "23:16: routes[partners].auth.tenants: tenants are checked in a token, and `token: false` asks for none: "
        "drop one or the other",
        "24:15: routes[partners].auth.scopes: scopes are checked in a token, and `token: false` asks for none: "
        "drop one or the other"]


def test_token_false_alone_asks_for_nothing(tmp_path: Path, ca: Ca) -> None:
    assert errors_of(write(tmp_path, ca, "    auth: {token: false}\n")) == [
        "22:11: routes[partners].auth: give at least one of tenants, scopes, claims or client_certificates; for a "
        "public route write `auth: none`"]


def test_a_token_requirement_without_ext_authz_points_to_token_false(tmp_path: Path, ca: Ca) -> None:
    assert errors_of(write(tmp_path, ca, f"    auth: {{client_certificates: [{BILLING}]}}\n", extauthz=False)) == [
        "19:11: routes[partners].auth: auth needs ext_authz: add an `extauthz:` section naming its service (or, for "
        "the client certificate alone, `token: false`)"]


def test_an_empty_list_is_an_error(tmp_path: Path, ca: Ca) -> None:
    assert errors_of(write(tmp_path, ca, "    auth: {client_certificates: [], token: false}\n")) == [
        "22:33: routes[partners].auth.client_certificates: needs at least 1 item"]


def test_rate_limits_per_token_fact_need_a_token(tmp_path: Path, ca: Ca) -> None:
    directory = write(tmp_path, ca, f"    auth: {{client_certificates: [{BILLING}], token: false}}\n"
                                    "    rate_limits: [{per: tenant, unit: minute, requests: 5}]\n")
    (directory / "gateway.yaml").write_text((directory / "gateway.yaml").read_text().replace(
        "tenants:", "ratelimit: {service: authz}\ntenants:"))
    errors = errors_of(directory)
    assert [e.split(": ", 1)[1] for e in errors] == [
        "routes[partners].rate_limits[0].per: per tenant needs a token, but the route has `token: false`"]


SCHEMA = jsonschema.Draft202012Validator(json_schema())


def _route_with(entry: str) -> dict[str, object]:
    return {"routes": [{"name": "r", "match": {"prefix": "/"}, "service": "s",
                        "auth": {"client_certificates": [entry], "token": False}}]}


@pytest.mark.parametrize("entry", [BILLING, "spiffe://pavilion.example/ns/ops/*", "billing.partners.example",
                                   "*.partners.example", "localhost"])
def test_the_schema_accepts_what_loads(entry: str) -> None:
    assert not list(SCHEMA.iter_errors(_route_with(entry)))


@pytest.mark.parametrize("entry", ["spiffe://pavilion.example/ns/*/sa", "billing partners.example",
                                   "a.*.example", "spiffe://pavilion.example/ns/part*", "billing.example/x", ""])
def test_the_schema_refuses_what_an_editor_can_tell(entry: str) -> None:
    assert list(SCHEMA.iter_errors(_route_with(entry)))
