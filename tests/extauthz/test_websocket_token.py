"""A browser websocket's token offered as a subprotocol (extauthz/websocket_token.py): read on an upgrade to a
route with the `websocket` extension alone, verified as that bearer token, never passed to the service; the
shared cached answer is never changed, and `check_now` never looks at the header."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping

import pytest

from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from extauthz.revocation import MemoryRevocations
from extauthz.tenant_set import build_tenants, retire
from extauthz.websocket_token import TOKEN_PREFIX, SubprotocolToken, subprotocol_token
from tests.extauthz.issuer import Issuer

ACME = Issuer(algs=("ES256",))
OTHER = Issuer(issuer="https://idp.other.test", name="other", algs=("ES256",))
WEBSOCKET = {"websocket": "1"}
UPGRADE = {"upgrade": "websocket", "connection": "Upgrade"}
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def entry(token: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def offered(value: str, **extra: str) -> dict[str, str]:
    return {**UPGRADE, "sec-websocket-protocol": value, **extra}


def taken(result: SubprotocolToken | Outcome | None) -> SubprotocolToken:
    assert isinstance(result, SubprotocolToken), result
    return result


@pytest.mark.parametrize(("value", "remaining"), [
    (f"{entry(TOKEN)}, chat.v1", "chat.v1"),
    (f"chat.v2,{entry(TOKEN)} ,  chat.v1", "chat.v2, chat.v1"),
    (f"\t{entry(TOKEN)}\t", None),
    (f"{entry(TOKEN)},", None),
])
def test_the_token_is_taken_from_among_the_entries(value: str, remaining: str | None) -> None:
    assert taken(subprotocol_token(offered(value), WEBSOCKET)) == SubprotocolToken(TOKEN, remaining)


def test_the_upgrade_may_name_websocket_in_any_case_or_among_others() -> None:
    for upgrade in ("WebSocket", "h2c, websocket"):
        headers = {"upgrade": upgrade, "sec-websocket-protocol": entry(TOKEN)}
        assert taken(subprotocol_token(headers, WEBSOCKET)).token == TOKEN


@pytest.mark.parametrize(("headers", "extensions"), [
    (offered(entry(TOKEN)), {}),  # not a websocket route
    (offered(entry(TOKEN)), {"route": "orders", "tenant": "acme"}),
    ({"sec-websocket-protocol": entry(TOKEN)}, WEBSOCKET),  # no upgrade
    ({"upgrade": "h2c", "sec-websocket-protocol": entry(TOKEN)}, WEBSOCKET),
    (offered("chat.v1"), WEBSOCKET),  # no token among the entries
    (offered("base64url.bearer.authorization.k8s.io." + entry(TOKEN)[len(TOKEN_PREFIX):]), WEBSOCKET),
    (UPGRADE, WEBSOCKET),
])
def test_nothing_is_taken_elsewhere(headers: dict[str, str], extensions: dict[str, str]) -> None:
    assert subprotocol_token(headers, extensions) is None


@pytest.mark.parametrize("rest", ["", "not*base64", "abc=", "a", "YWJj+w", "IGJhZCB0b2tlbiA", "_-8"])
def test_a_malformed_entry_is_401_invalid_token_without_the_token(rest: str) -> None:
    refusal = subprotocol_token(offered(f"{TOKEN_PREFIX}{rest}, chat.v1"), WEBSOCKET)
    assert isinstance(refusal, Outcome)
    assert (refusal.status, refusal.reason) == (401, "malformed_websocket_token")
    challenge = dict(refusal.headers)["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert len(rest) < 4 or rest not in challenge  # the entry is never echoed


def test_two_tokens_are_400() -> None:
    refusal = subprotocol_token(offered(f"{entry(TOKEN)}, chat.v1, {entry(TOKEN)}"), WEBSOCKET)
    assert isinstance(refusal, Outcome)
    assert (refusal.status, refusal.reason) == (400, "multiple_credentials")


@pytest.fixture
async def authorizer() -> AsyncIterator[Authorizer]:
    tenants = await build_tenants([ACME.tenant("acme"), OTHER.tenant("other")])
    try:
        yield Authorizer(tenants, MemoryRevocations())
    finally:
        await retire(tenants, None)


async def decide(authorizer: Authorizer, headers: Mapping[str, str], extensions: Mapping[str, str] = WEBSOCKET,
                 path: str = "/chat") -> Outcome:
    now = authorizer.check_now(headers, path, extensions)
    return now if now is not None else await authorizer.check(headers, path, extensions)


async def test_a_subprotocol_token_is_checked_as_a_bearer_token(authorizer: Authorizer) -> None:
    token = ACME.token("ES256", sub="browser")
    outcome = await decide(authorizer, offered(f"{entry(token)}, chat.v1"))
    assert (outcome.status, outcome.tenant, outcome.subject) == (200, "acme", "browser")
    assert ("sec-websocket-protocol", "chat.v1") in outcome.headers
    alone = await decide(authorizer, offered(entry(token)))
    assert alone.allowed and "sec-websocket-protocol" in alone.headers_to_remove
    assert not any(name == "sec-websocket-protocol" for name, _ in alone.headers)
    # Route admission as for any bearer token: the route's tenants.
    refused = await decide(authorizer, offered(entry(token)), {**WEBSOCKET, "tenant": "other"})
    assert (refused.status, refused.reason) == (403, "wrong_tenant")
    bad = await decide(authorizer, offered(entry(ACME.token("ES256", aud="https://elsewhere.test"))))
    assert bad.status == 401


async def test_the_shared_cached_answer_is_never_changed(authorizer: Authorizer) -> None:
    token = ACME.token("ES256")
    shared = await decide(authorizer, {"authorization": f"Bearer {token}"})
    before = (shared.headers, shared.headers_to_remove)
    first = await decide(authorizer, offered(f"{entry(token)}, chat.v1"))
    assert first is not shared and (shared.headers, shared.headers_to_remove) == before
    # The same token and entries again: the same answer (its serialization is reused by the service).
    assert await decide(authorizer, offered(f"{entry(token)},chat.v1")) is first
    other = await decide(authorizer, offered(f"{entry(token)}, chat.v2"))
    assert other is not first and ("sec-websocket-protocol", "chat.v2") in other.headers
    assert await decide(authorizer, {"authorization": f"Bearer {token}"}) is shared


async def test_another_credential_beside_the_subprotocol_token_is_400(authorizer: Authorizer) -> None:
    token = ACME.token("ES256")
    for extra in ({"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": "Bearer a b"},
                  {"authorization": f"DPoP {token}", "dpop": "proof"}):
        outcome = await decide(authorizer, offered(entry(token), **extra))
        assert (outcome.status, outcome.reason) == (400, "multiple_credentials"), extra
    query = await decide(authorizer, offered(entry(token)), path=f"/chat?access_token={token}")
    assert (query.status, query.reason) == (400, "multiple_credentials")
    two = await decide(authorizer, offered(f"{entry(token)}, {entry(token)}"))
    assert (two.status, two.reason) == (400, "multiple_credentials")


async def test_a_bearer_authorization_header_decides_alone(authorizer: Authorizer) -> None:
    """A usable Authorization header is the credential, cached or not: `check_now` never reads the
    subprotocol, so `check` does not either (the answer does not depend on the cache)."""
    token = ACME.token("ES256")
    headers = offered(entry("whatever"), authorization=f"Bearer {token}")
    uncached = await authorizer.check(headers, "/chat", WEBSOCKET)
    cached = authorizer.check_now(headers, "/chat", WEBSOCKET)
    assert uncached.allowed and cached is uncached  # the shared answer, nothing about the subprotocol


async def test_the_subprotocol_is_no_credential_elsewhere(authorizer: Authorizer) -> None:
    token = ACME.token("ES256")
    for headers, extensions in ((offered(entry(token)), {"route": "orders"}),
                                ({"sec-websocket-protocol": entry(token)}, WEBSOCKET)):
        outcome = await decide(authorizer, headers, extensions)
        assert (outcome.status, outcome.reason) == (401, "missing")
    malformed = await decide(authorizer, offered(TOKEN_PREFIX + "!!"))
    assert (malformed.status, malformed.reason) == (401, "malformed_websocket_token")


async def test_a_revoked_token_is_refused_as_a_subprotocol_too(authorizer: Authorizer) -> None:
    token = ACME.token("ES256", jti="ws-revoked")
    assert (await decide(authorizer, offered(entry(token)))).allowed
    await authorizer.store.revoke_token(ACME.issuer, "ws-revoked", 4_000_000_000)
    outcome = await decide(authorizer, offered(entry(token)))
    assert (outcome.status, outcome.reason) == (401, "revoked")
