"""The tenant YAML file: shapes accepted, and each mistake reported at FILE:LINE:COL with its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extauthz.config import load_tenants, parse_tenants
from pavilion.errors import ConfigError
from tests.extauthz.issuer import Issuer

JWK = Issuer().keys["ES256"][1]
INLINE = json.dumps({"keys": [JWK]})


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_tenants(text, "t.yaml", base_dir=Path("/cfg"))
    return str(info.value).splitlines()


def test_full_tenant_is_read_with_durations_headers_and_sources(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(INLINE)
    path = tmp_path / "tenants.yaml"
    path.write_text(f"""
tenants:
  - id: acme
    issuer: https://idp.acme.test
    audiences: [accounts-api, admin-api]
    algorithms: [ES256]
    jwks: {{inline: {INLINE}}}
    clock_skew: 45s
    max_lifetime: 2h
    claims_to_headers: {{sub: X-User-Id, email: x-user-email, groups: x-user-groups}}
    on_store_error: allow
    token_type: at+jwt
  - id: beta
    issuer: https://idp.beta.test
    audiences: api
    jwks: {{file: keys.json, timeout: 500ms}}
  - id: gamma
    issuer: https://idp.gamma.test
    audiences: [api]
    discovery: https://idp.gamma.test/.well-known/openid-configuration
  - id: delta
    issuer: https://idp.delta.test
    audiences: [api]
    jwks: {{uri: "http://127.0.0.1:8080/jwks", allow_http_loopback: true, refresh: 10m, cooldown: 5s}}
""")
    acme, beta, gamma, delta = load_tenants(path)
    assert acme.id == "acme" and acme.audiences == ("accounts-api", "admin-api")
    assert acme.clock_skew == 45.0 and acme.max_lifetime == 7200.0
    assert acme.claims_to_headers == (("sub", "x-user-id"), ("email", "x-user-email"), ("groups", "x-user-groups"))
    assert acme.on_store_error == "allow" and acme.token_type == "at+jwt"
    assert acme.jwks.inline_keys() == [JWK]
    assert beta.audiences == ("api",)
    assert beta.jwks.file == str(tmp_path / "keys.json") and beta.jwks.timeout == 0.5
    assert beta.on_store_error == "deny" and beta.clock_skew == 30.0
    assert gamma.jwks.discovery == "https://idp.gamma.test/.well-known/openid-configuration"
    assert delta.jwks.uri == "http://127.0.0.1:8080/jwks" and delta.jwks.refresh == 600.0
    assert delta.jwks.cooldown == 5.0


@pytest.mark.parametrize(("text", "expected"), [
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    clock_skew: 30\n",
     "t.yaml:6:17: tenants[0].clock_skew: must be a duration"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    max_lifetime: forever\n",
     "t.yaml:6:19: tenants[0].max_lifetime: 'forever' is not a duration"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    colour: blue\n",
     "t.yaml:6:5: tenants[0].colour: unknown field"),
    ("tenants:\n  - issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n",
     "t.yaml:2:5: tenants[0]: missing required field `id`"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n",
     "t.yaml:2:5: tenants[0]: give exactly one of `jwks` or `discovery`"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: http://idp.test/j}\n",
     "t.yaml:5:17: tenants[0].jwks.uri: 'http://idp.test/j' is plain http"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n"
     "    jwks: {uri: https://i/j, file: k.json}\n",
     "t.yaml:5:11: tenants[0].jwks: give exactly one of inline, file, uri, discovery (got file, uri)"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    claims_to_headers: {sub: x-pavilion-subject}\n",
     "t.yaml:6:30: tenants[0].claims_to_headers: header 'x-pavilion-subject' is reserved"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    claims_to_headers: {email: 'x user'}\n",
     "t.yaml:6:32: tenants[0].claims_to_headers: 'x user' is not a valid HTTP header name"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    on_store_error: maybe\n",
     "t.yaml:6:21: tenants[0].on_store_error: on_store_error must be deny or allow"),
    ("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
     "    algorithms: [HS256]\n",
     "t.yaml:6:17: tenants[0].algorithms: algorithm 'HS256' is not accepted"),
    ("tenants:\n  - id: Acme Corp\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n",
     "t.yaml:2:9: tenants[0].id: tenant id must be lower-case"),
    ("tenants: []\n", "t.yaml:1:10: tenants: `tenants` must be a non-empty list"),
    ("tenants:\n  - id: acme\n    issuer: [https://i\n", "t.yaml:4:1: YAML syntax error"),
])
def test_each_mistake_is_reported_where_it_was_written(text: str, expected: str) -> None:
    lines = errors_of(text)
    assert any(line.startswith(expected) for line in lines), lines


def test_every_problem_of_a_file_is_reported_in_one_pass() -> None:
    text = ("tenants:\n"
            "  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
            "    clock_skew: soon\n"
            "  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n"
            "  - id: beta\n    issuer: https://b\n    audiences: [a]\n    jwks: {uri: https://b/j}\n    x: 1\n")
    lines = errors_of(text)
    assert lines[0].startswith("t.yaml:6:17: tenants[0].clock_skew")
    assert lines[1].startswith("t.yaml:15:5: tenants[2].x: unknown field")
    assert len(lines) == 2  # the second acme is only a duplicate once the first one is valid


def test_duplicate_ids_and_issuers_are_refused() -> None:
    tenant = "  - id: {id}\n    issuer: {iss}\n    audiences: [a]\n    jwks: {{uri: https://i/j}}\n"
    text = "tenants:\n" + tenant.format(id="a", iss="https://i") + tenant.format(id="a", iss="https://j") \
        + tenant.format(id="c", iss="https://i")
    lines = errors_of(text)
    assert lines == ["t.yaml:6:5: tenants: tenant id 'a' is used twice",
                     "t.yaml:10:5: tenants: issuer 'https://i' belongs to two tenants"]


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the tenant file"):
        load_tenants(tmp_path / "missing.yaml")
