"""A route's required scopes and claim values: the rules one by one, then over real gRPC, on a token's
first check and on its cached ones (the two code paths of the authorizer)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extauthz.decision import Outcome
from extauthz.route_requirements import RouteRequirement, route_requirement, token_scopes
from tests.extauthz import test_service
from tests.extauthz.test_service import ACME, BETA, bearer, denied, ok_headers

stack = test_service.stack  # the fixture: a real gRPC Check server over an in-memory store

READ = {"scopes": "accounts:read"}
ADMIN = {"scopes": "accounts:read accounts:admin"}


def requirement(scopes: str | None = None, claims: Any = None) -> RouteRequirement:
    found = route_requirement(scopes, json.dumps(claims) if claims is not None else None)
    assert isinstance(found, RouteRequirement), found
    return found


def refused(scopes: str | None = None, claims: Any = None, **token: Any) -> str | None:
    """The refusal's reason for a token with these claims on such a route; None when admitted."""
    outcome = requirement(scopes, claims).refusal(token_scopes(token), token)
    return None if outcome is None else outcome.reason


@pytest.mark.parametrize(("claims", "expected"), [
    ({"scope": "a b  c"}, {"a", "b", "c"}),
    ({"scp": ["a", "b", 3, None, ""]}, {"a", "b"}),
    ({"scp": "a b"}, {"a", "b"}),
    ({"scope": "a", "scp": ["b"]}, {"a", "b"}),
    # Only a space separates scopes (RFC 6749): a tab does not smuggle a second one in.
    ({"scope": "a\tadmin"}, {"a\tadmin"}),
    ({"scope": {"admin": True}}, set()),
    ({}, set()),
])
def test_a_tokens_scopes_are_the_union_of_scope_and_scp(claims: dict[str, Any], expected: set[str]) -> None:
    assert token_scopes(claims) == expected


def test_every_required_scope_must_be_held() -> None:
    assert refused("a", scope="a b") is None
    assert refused("a b", scope="b a") is None
    assert refused("a b", scope="a") == "missing_scope"
    assert refused("a", scope="") == "missing_scope"
    assert refused("a") == "missing_scope"
    assert refused("admin", scope="a\tadmin") == "missing_scope"


def test_each_claim_must_hold_one_of_its_values_as_a_string() -> None:
    groups = {"groups": ["admins", "ops"]}
    assert refused(claims=groups, groups=["ops", "dev"]) is None
    assert refused(claims=groups, groups="admins") is None
    assert refused(claims=groups, groups=["dev"]) == "claim_not_allowed"
    assert refused(claims=groups) == "claim_not_allowed"
    assert refused(claims={"admin": ["true"]}, admin=True) == "claim_not_allowed"
    assert refused(claims={"level": ["3"]}, level=3) == "claim_not_allowed"
    assert refused(claims={"groups": ["admins"]}, groups=[["admins"]]) == "claim_not_allowed"
    both = {"groups": ["admins"], "plan": ["gold"]}
    assert refused(claims=both, groups=["admins"], plan="gold") is None
    assert refused(claims=both, groups=["admins"], plan="silver") == "claim_not_allowed"
    assert refused("a", both, scope="b", groups="admins", plan="gold") == "missing_scope"


def test_the_scope_refusal_names_the_routes_scopes_in_its_challenge() -> None:
    outcome = requirement("accounts:read accounts:admin").missing_scope
    assert outcome.status == 403
    assert dict(outcome.headers)["www-authenticate"] == (
        'Bearer error="insufficient_scope", error_description="the token lacks a scope this route requires", '
        'scope="accounts:read accounts:admin"')
    assert "scope=" not in dict(requirement(claims={"g": ["x"]}).claim_not_allowed.headers)["www-authenticate"]


@pytest.mark.parametrize(("scopes", "claims"), [
    ("", None),
    ('accounts"read', None),
    ("accounts\\read", None),
    ("caf\u00e9", None),
    ("a" * 9000, None),
    (None, "{not json"),
    (None, "[]"),
    (None, "{}"),
    (None, '{"groups": []}'),
    (None, '{"groups": "admins"}'),
    (None, '{"groups": ["admins", 1]}'),
    (None, '{"groups": [""]}'),
    (None, '{"scope": ["admin"]}'),
    (None, '{"": ["x"]}'),
])
def test_a_requirement_that_cannot_be_read_is_a_503(scopes: str | None, claims: str | None) -> None:
    outcome = route_requirement(scopes, claims)
    assert isinstance(outcome, Outcome)
    assert (outcome.status, outcome.reason) == (503, "route_requirement_invalid")


def test_each_routes_requirement_is_read_once() -> None:
    assert route_requirement("a b", '{"g":["x"]}') is route_requirement("a b", '{"g":["x"]}')


async def test_a_route_admits_a_token_with_its_scopes_first_time_and_cached(stack: dict[str, Any]) -> None:
    check = stack["check"]
    token = ACME.token(scope="accounts:read accounts:write")
    # The first check of the token (verification) on the admin route, then cached checks on both routes.
    code, headers, body = denied(await check(bearer(token), extensions=ADMIN))
    assert (code, json.loads(body)) == (403, {"error": "missing_scope"})
    assert headers["www-authenticate"].endswith('scope="accounts:read accounts:admin"')
    assert ok_headers(await check(bearer(token), extensions=READ))[0]["x-pavilion-subject"] == "user-1"
    assert denied(await check(bearer(token), extensions=ADMIN))[0] == 403
    assert ok_headers(await check(bearer(token), extensions={}))
    assert stack["verifications"] == ["acme"]


async def test_a_route_admits_a_token_by_claim_values(stack: dict[str, Any]) -> None:
    check = stack["check"]
    ops = ACME.token(groups=["ops"], jti="ops")
    for _ in range(2):  # first check, then cached
        assert ok_headers(await check(bearer(ops), extensions={"claims": '{"groups":["admins","ops"]}'}))
        code, _, body = denied(await check(bearer(ops), extensions={"claims": '{"groups":["admins"]}'}))
        assert (code, json.loads(body)) == (403, {"error": "claim_not_allowed"})


async def test_the_routes_tenant_is_checked_before_its_scopes_and_both_must_pass(stack: dict[str, Any]) -> None:
    check = stack["check"]
    beta = BETA.token(scope="accounts:read")
    code, _, body = denied(await check(bearer(beta), tenant="acme", extensions=READ))
    assert (code, json.loads(body)) == (403, {"error": "wrong_tenant"})
    assert ok_headers(await check(bearer(beta), tenant=None, extensions=READ))[0]["x-pavilion-tenant"] == "beta"


async def test_a_token_a_route_refuses_costs_no_revocation_question(stack: dict[str, Any]) -> None:
    check, store = stack["check"], stack["store"]
    token = ACME.token(scope="accounts:read", jti="quiet")
    for _ in range(3):
        assert denied(await check(bearer(token), extensions=ADMIN))[0] == 403
    assert store.asked == 0
    assert ok_headers(await check(bearer(token), extensions=READ))
    assert store.asked == 1


async def test_a_broken_requirement_never_lets_a_token_through(stack: dict[str, Any]) -> None:
    check = stack["check"]
    token = ACME.token(scope="accounts:read", groups=["admins"])
    for _ in range(2):
        code, _, body = denied(await check(bearer(token), extensions={"claims": '{"groups": "admins"}'}))
        assert (code, json.loads(body)) == (503, {"error": "route_requirement_invalid"})
