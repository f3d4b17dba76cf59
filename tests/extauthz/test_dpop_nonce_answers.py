"""DPoP nonces given with allowed answers (RFC 9449 section 9): a client that follows them never meets a
`use_dpop_nonce` 401 after its first request, and the shared cached outcome is never changed. And the nonce
secret the workers of one process tree share without Redis."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from extauthz.dpop_replay import NONCE_SECRET_FILE, MemoryReplay, shared_secret
from extauthz.dpop_sign import key_thumbprint, make_proof
from extauthz.revocation import MemoryRevocations
from extauthz.service import to_response
from extauthz.tenant import DpopPolicy
from extauthz.tenant_set import build_tenants, retire
from tests.extauthz.test_dpop import ACME, URL, Stack, bound_token, client_key, nonce_of


class Clock:
    def __init__(self) -> None:
        self.now = 60.0 * (int(time.time()) // 60 + 1)  # the start of the next nonce window

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked() -> AsyncIterator[tuple[Stack, Clock]]:
    clock = Clock()
    built = await build_tenants([ACME.tenant("acme", dpop=DpopPolicy(nonce=True)),
                                 ACME.tenant("plain", issuer="https://idp.plain.test")])
    try:
        yield Stack(Authorizer(built, MemoryRevocations(), clock=clock), []), clock
    finally:
        await retire(built, None)


def proof(token: str, clock: Clock, nonce: str | None) -> str:
    return make_proof(client_key(), method="GET", url=URL, access_token=token, iat=clock.now,
                      claims={} if nonce is None else {"nonce": nonce})


def given(outcome: Outcome) -> str | None:
    return dict(outcome.response_headers).get("dpop-nonce")


async def test_a_proof_with_the_previous_windows_nonce_is_allowed_and_given_the_current_one(
        clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    token = bound_token(jti="t-answers")
    first = await stack.dpop(token, proof(token, clock, None))
    assert (first.status, first.reason) == (401, "dpop_nonce_required")
    nonce = nonce_of(first)
    current = await stack.dpop(token, proof(token, clock, nonce))
    assert current.allowed and current.response_headers == ()  # the client has this one already
    clock.now += 60
    old = await stack.dpop(token, proof(token, clock, nonce))
    assert old.allowed
    newer = given(old)
    assert newer is not None and newer != nonce
    again = await stack.dpop(token, proof(token, clock, nonce))
    assert again is old  # one answer per token and window, not one per request
    # The cached outcome, shared with every other request of the token, was not changed.
    assert current.response_headers == () and given(await stack.dpop(token, proof(token, clock, newer))) is None
    assert old.headers == current.headers and old.tenant == current.tenant and old.subject == current.subject


async def test_a_client_following_the_given_nonces_never_meets_a_401_after_its_first(
        clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    token = bound_token(jti="t-follow", exp=int(clock.now) + 3600)
    nonce = first = nonce_of(await stack.dpop(token, proof(token, clock, None)))
    for _ in range(5):  # one request a window, near its end
        clock.now += 59
        outcome = await stack.dpop(token, proof(token, clock, nonce))
        assert outcome.allowed, outcome
        nonce = given(outcome) or nonce
        clock.now += 1
    # Without the given nonces, the client would still hold the first one, long stale by now.
    outcome = await stack.dpop(token, proof(token, clock, first))
    assert (outcome.status, outcome.reason) == (401, "dpop_nonce_stale")


async def test_tenants_without_nonces_and_bearer_requests_get_no_nonce(clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    plain = ACME.token("ES256", iss="https://idp.plain.test", cnf={"jkt": key_thumbprint(client_key())})
    outcome = await stack.dpop(plain, proof(plain, clock, None))
    assert outcome.allowed and outcome.response_headers == ()
    bearer = ACME.token("ES256", iss="https://idp.plain.test")
    for _ in range(2):  # verified, then cached (check_now)
        outcome = await stack.check({"authorization": f"Bearer {bearer}"})
        assert outcome.allowed and outcome.response_headers == ()


def test_the_nonce_goes_to_the_client_in_response_headers_to_add() -> None:
    from extauthz import decision

    allowed = decision.allowed("acme", "user-1", {}, ())
    given_one = to_response(decision.with_dpop_nonce(allowed, "n" * 27)).ok_response
    assert [(h.header.key, h.header.value) for h in given_one.response_headers_to_add] == [("dpop-nonce", "n" * 27)]
    assert [h.header.key for h in given_one.headers] == [h.header.key for h in to_response(allowed).ok_response.headers]
    assert not to_response(allowed).ok_response.response_headers_to_add


# -- one nonce secret for the workers of one process tree, without Redis -------------------------------------


async def test_replay_stores_sharing_a_directory_share_one_nonce_secret(tmp_path: Path) -> None:
    one, two = MemoryReplay(share_in=str(tmp_path)), MemoryReplay(share_in=str(tmp_path))
    first = await asyncio.gather(*(one.nonce_secret() for _ in range(5)))  # concurrent first askers agree
    assert len(set(first)) == 1 and len(first[0]) == 32
    assert await two.nonce_secret() == first[0]
    assert (tmp_path / NONCE_SECRET_FILE).stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == [NONCE_SECRET_FILE]  # no temporary file left
    other = tmp_path / "other"
    other.mkdir()
    assert await MemoryReplay(share_in=str(other)).nonce_secret() != first[0]
    assert await MemoryReplay().nonce_secret() != await MemoryReplay().nonce_secret()  # alone: per process


def test_processes_racing_to_write_the_secret_all_read_the_winners(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        found = set(pool.map(lambda _: shared_secret(str(tmp_path)), range(32)))
    assert len(found) == 1


async def test_an_unreadable_shared_secret_falls_back_to_one_of_the_processs_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / NONCE_SECRET_FILE).write_text("not hex")
    replay = MemoryReplay(share_in=str(tmp_path))
    secret = await replay.nonce_secret()
    assert len(secret) == 32 and await replay.nonce_secret() == secret
    logged = capsys.readouterr()
    assert "dpop_nonce_secret_not_shared" in logged.out + logged.err
