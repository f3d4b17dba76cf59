"""Pure decisions: which credential, which refusal (status, reason, challenge), which identity headers."""

from __future__ import annotations

import json

import pytest

from extauthz.decision import (
    Outcome,
    allowed,
    bearer_token,
    challenge,
    header_value,
    insufficient_scope,
    invalid_token,
    route_tenants,
    unavailable,
)

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def refusal(result: str | Outcome) -> Outcome:
    assert isinstance(result, Outcome), result
    return result


def header(outcome: Outcome, name: str) -> str | None:
    return dict(outcome.headers).get(name)


def test_one_bearer_token_is_taken() -> None:
    assert bearer_token({"authorization": f"Bearer {TOKEN}"}, "/") == TOKEN
    assert bearer_token({"authorization": f"bearer   {TOKEN}"}, "/a?b=c") == TOKEN


def test_missing_credential_is_401_with_a_bare_challenge() -> None:
    outcome = refusal(bearer_token({}, "/"))
    assert (outcome.status, outcome.reason) == (401, "missing")
    assert header(outcome, "www-authenticate") == "Bearer"  # RFC 6750 3.1: no error code
    other = refusal(bearer_token({"authorization": "Basic dXNlcjpwYXNz"}, "/"))
    assert (other.status, other.reason, header(other, "www-authenticate")) == (401, "unsupported_scheme", "Bearer")


@pytest.mark.parametrize(("headers", "path", "reason"), [
    ({"authorization": f"Bearer {TOKEN},Bearer {TOKEN}"}, "/", "multiple_credentials"),
    ({"authorization": f"Bearer {TOKEN}, Bearer other"}, "/", "multiple_credentials"),
    ({"authorization": f"Basic abc, Bearer {TOKEN}"}, "/", "multiple_credentials"),
    ({"authorization": f"Bearer {TOKEN}"}, f"/x?access_token={TOKEN}", "multiple_credentials"),
    ({}, f"/x?a=1&access_token={TOKEN}", "query_token"),
    ({"authorization": "Bearer"}, "/", "empty_bearer"),
    ({"authorization": "Bearer    "}, "/", "empty_bearer"),
    ({"authorization": "Bearer a b"}, "/", "malformed_credential"),
    ({"authorization": 'Bearer a"b'}, "/", "malformed_credential"),
])
def test_malformed_requests_are_400_invalid_request(headers: dict[str, str], path: str, reason: str) -> None:
    outcome = refusal(bearer_token(headers, path))
    assert (outcome.status, outcome.reason) == (400, reason)
    assert header(outcome, "www-authenticate").startswith('Bearer error="invalid_request", error_description="')


def test_a_query_parameter_merely_containing_the_name_is_no_credential() -> None:
    assert bearer_token({"authorization": f"Bearer {TOKEN}"}, "/x?my_access_token_count=1") == TOKEN


def test_refusals_carry_status_reason_challenge_and_json_body() -> None:
    bad = invalid_token("expired", "token has expired")
    assert bad.status == 401 and not bad.allowed
    assert header(bad, "www-authenticate") == 'Bearer error="invalid_token", error_description="token has expired"'
    assert json.loads(bad.body) == {"error": "expired"}
    assert header(bad, "cache-control") == "no-store"
    scope = insufficient_scope("wrong_tenant", "not here")
    assert scope.status == 403 and header(scope, "www-authenticate").startswith('Bearer error="insufficient_scope"')
    down = unavailable("store_unavailable")
    assert down.status == 503 and header(down, "www-authenticate") is None


def test_challenge_descriptions_cannot_break_out_of_their_quotes() -> None:
    value = challenge("invalid_token", 'evil" , error="x\\\r\nSet-Cookie: a=b \u00e9')
    assert value.count('"') == 4
    assert "\r" not in value and "\n" not in value and "\\" not in value
    assert len(challenge("invalid_token", "x" * 1000)) < 260


def test_route_tenants_come_from_the_context_extension() -> None:
    assert route_tenants({}) is None
    assert route_tenants({"tenant": "acme"}) == ("acme",)
    assert route_tenants({"tenant": " acme, beta ,"}) == ("acme", "beta")


@pytest.mark.parametrize(("value", "expected"), [
    ("alice@example.test", "alice@example.test"),
    (["admin", "dev"], "admin,dev"),
    ([1, True, "x"], "1,true,x"),
    (42, "42"),
    (False, "false"),
    (None, None),
    ("", None),
    ([], None),
    ("Jos\u00e9", "Jos\u00e9"),
])
def test_claim_values_become_header_values(value: object, expected: str | None) -> None:
    assert header_value(value) == expected


@pytest.mark.parametrize("value", [
    "a\r\nx-injected: 1", "a\nb", "nul\x00", "del\x7f", "c1\x85", "sep\u2028", " padded", "x" * 1025,
    ["admin,root"], [["nested"]], [{"a": 1}], {"a": "b"}, [None],
])
def test_unsafe_claim_values_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        header_value(value)


def test_allowed_sets_identity_headers_and_removes_the_ones_it_does_not_set() -> None:
    mapping = (("email", "x-user-email"), ("groups", "x-user-groups"), ("dept", "x-user-dept"))
    outcome = allowed("acme", "user-1", {"email": "a@b.test", "groups": ["g1", "g2"]}, mapping)
    assert outcome.allowed and outcome.reason == "ok"
    assert outcome.headers == (("x-pavilion-tenant", "acme"), ("x-pavilion-subject", "user-1"),
                               ("x-user-email", "a@b.test"), ("x-user-groups", "g1,g2"))
    # Envoy applies removals after sets: a header we set must not be removed, every other one must.
    assert outcome.headers_to_remove == ("x-user-dept",)
    assert (outcome.tenant, outcome.subject) == ("acme", "user-1")


def test_a_claim_that_would_inject_a_header_refuses_the_token() -> None:
    outcome = allowed("acme", "user-1", {"email": "a@b.test\r\nx-pavilion-tenant: beta"},
                      (("email", "x-user-email"),))
    assert (outcome.status, outcome.reason) == (401, "bad_claim")
    assert "\r" not in header(outcome, "www-authenticate")
    assert not allowed("acme", "", {}, ()).allowed
    assert not allowed("acme", "bad\nsub", {}, ()).allowed
