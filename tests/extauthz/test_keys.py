"""Key loading and key sets: JWK rules, sources (inline, file, JWKS URL, discovery), and fetch policy.

Remote sources are served by an in-process aiohttp server on 127.0.0.1 in the test's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import REGISTRY

from extauthz.jwk import RejectedKey, parse_jwk, parse_jwk_set
from extauthz.jwks import cache_max_age
from extauthz.keys import KeySet, key_set_for
from extauthz.signing import generate_key, public_jwk
from extauthz.tenant import JwksSource, Tenant
from extauthz.tokens import b64url_encode
from pavilion.errors import BackendUnavailable, ConfigError, TokenError, UnknownKey
from tests.extauthz.issuer import Issuer, cached_key
from tests.extauthz.jwks_server import JwksServer

IDP = Issuer()
RSA_KID = IDP.kid("RS256")
EC_KID = IDP.kid("ES256")


@contextlib.asynccontextmanager
async def running(keys: KeySet) -> AsyncIterator[KeySet]:
    """`keys`, closed on the way out whatever happens."""
    try:
        yield keys
    finally:
        await keys.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    srv = await JwksServer(jwks=IDP.jwks()).start()
    try:
        yield srv
    finally:
        await srv.stop()


def remote_tenant(srv: JwksServer, *, discovery: bool = False, issuer: str | None = None, **fetch: Any) -> Tenant:
    # A generous timeout: a busy test machine must not turn a healthy local fetch into a failure.
    settings: dict[str, Any] = {"allow_http_loopback": True, "timeout": 5.0, "error_retry": 0.5, **fetch}
    source = (JwksSource(discovery=srv.discovery_url, **settings) if discovery
              else JwksSource(uri=srv.jwks_url, **settings))
    return IDP.tenant(jwks=source, issuer=issuer or IDP.issuer)


def jwk_without(jwk: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in names}


def weak_rsa_jwk() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return public_jwk(key, kid="weak", alg="RS256")


SYMMETRIC = {"kty": "oct", "kid": "sym", "k": b64url_encode(b"s" * 32), "alg": "HS256"}


def wrong_curve_jwk() -> dict[str, Any]:
    jwk = dict(cached_key("ES384")[1])
    jwk.update(kid="curve", alg="ES256")   # a P-384 key claiming ES256
    return jwk


# -- one JWK ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA"])
def test_good_public_keys_load(alg: str) -> None:
    key = parse_jwk(cached_key(alg)[1])
    assert key.accepts(alg)
    assert key.kid == f"main-{alg}"


@pytest.mark.parametrize(("jwk", "why"), [
    (SYMMETRIC, "symmetric"),
    ({"kty": "RSA", "kid": "x"}, "member n"),
    ({"kty": "XYZ"}, "unsupported kty"),
    ({}, "kty is missing"),
    (jwk_without(cached_key("ES256")[1], "use") | {"use": "enc"}, "not sig"),
    (cached_key("ES256")[1] | {"key_ops": ["encrypt"]}, "key_ops"),
    (cached_key("RS256")[1] | {"alg": "HS256"}, "not accepted"),
    (cached_key("RS256")[1] | {"alg": "ES256"}, "does not match"),
    (cached_key("RS256")[1] | {"d": "AQAB"}, "private"),
    (cached_key("RS256")[1] | {"e": b64url_encode((2**64 + 1).to_bytes(9, "big"))}, "exponent"),
    (cached_key("RS256")[1] | {"e": "AQ"}, "invalid RSA"),
    (cached_key("ES256")[1] | {"crv": "secp256k1"}, "curve"),
    (cached_key("ES256")[1] | {"x": cached_key("ES384")[1]["x"]}, "wrong length"),
    (cached_key("ES256")[1] | {"y": cached_key("ES256")[1]["x"]}, "invalid EC"),
    (cached_key("EdDSA")[1] | {"crv": "X25519"}, "OKP curve"),
    (cached_key("ES256")[1] | {"kid": 7}, "kid"),
])
def test_unsafe_or_broken_keys_rejected(jwk: dict[str, Any], why: str) -> None:
    with pytest.raises(RejectedKey, match=why):
        parse_jwk(jwk)


def test_weak_rsa_rejected() -> None:
    with pytest.raises(RejectedKey, match="under 2048"):
        parse_jwk(weak_rsa_jwk())


def test_huge_rsa_rejected() -> None:
    # Checked before the numbers reach cryptography, so an odd 8200-bit integer is enough.
    n = b64url_encode((2**8200 + 1).to_bytes(1026, "big"))
    with pytest.raises(RejectedKey, match="over 8192"):
        parse_jwk({"kty": "RSA", "kid": "huge", "n": n, "e": "AQAB"})


def test_wrong_curve_for_alg_rejected() -> None:
    with pytest.raises(RejectedKey, match="does not match"):
        parse_jwk(wrong_curve_jwk())


def test_key_without_alg_is_bound_by_type_and_curve() -> None:
    key = parse_jwk(jwk_without(cached_key("ES384")[1], "alg"))
    assert key.accepts("ES384")
    assert not key.accepts("ES256") and not key.accepts("RS256") and not key.accepts("HS256")
    rsa_key = parse_jwk(jwk_without(cached_key("RS256")[1], "alg"))
    assert rsa_key.accepts("PS512") and not rsa_key.accepts("ES256") and not rsa_key.accepts("HS256")


def test_jwk_set_drops_bad_keys_and_keeps_good_ones() -> None:
    loaded = parse_jwk_set({"keys": [cached_key("RS256")[1], SYMMETRIC, weak_rsa_jwk(), wrong_curve_jwk(), "x"]},
                           max_keys=8)
    assert [k.kid for k in loaded.keys] == [RSA_KID]
    assert [kid for kid, _ in loaded.dropped] == ["sym", "weak", "curve", None]


@pytest.mark.parametrize("doc", [[], {"keys": {}}, {"key": []}, "x"])
def test_jwk_set_shape_required(doc: object) -> None:
    with pytest.raises(ValueError, match="JWK Set"):
        parse_jwk_set(doc, max_keys=8)


def test_jwk_set_key_count_capped() -> None:
    with pytest.raises(ValueError, match="cap"):
        parse_jwk_set({"keys": [cached_key("ES256")[1]] * 3}, max_keys=2)


# -- sources and tenants ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{}, {"uri": "https://a.test/j", "file": "/x"}])
def test_exactly_one_source(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        JwksSource(**kwargs)


@pytest.mark.parametrize(("url", "loopback_ok", "why"), [
    ("http://idp.test/jwks", True, "plain http"),
    ("http://127.0.0.1:1/jwks", False, "plain http"),
    ("ftp://idp.test/jwks", True, "scheme"),
    ("https:///jwks", False, "no host"),
    ("https://user:pw@idp.test/jwks", False, "credentials"),
])
def test_fetch_urls_must_be_https(url: str, loopback_ok: bool, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        JwksSource(uri=url, allow_http_loopback=loopback_ok)


@pytest.mark.parametrize("url", ["https://idp.test/jwks", "http://127.0.0.1:8080/j", "http://[::1]/j",
                                 "http://localhost/j"])
def test_allowed_fetch_urls(url: str) -> None:
    JwksSource(uri=url, allow_http_loopback=True)


def test_inline_key_set_without_a_usable_key_is_a_config_error() -> None:
    tenant = IDP.tenant(jwks=JwksSource.of_keys([SYMMETRIC]))
    with pytest.raises(ConfigError, match="no usable key"):
        key_set_for(tenant)


@pytest.mark.parametrize(("header", "age"), [
    (None, None), ("max-age=120", 120.0), ("public, max-age=600, must-revalidate", 600.0),
    ("no-store", 0.0), ("no-cache", 0.0), ("s-maxage=5", None), ("max-age=abc", None), ("private", None),
])
def test_cache_control_parsing(header: str | None, age: float | None) -> None:
    assert cache_max_age(header) == age


# -- remote key sets ----------------------------------------------------------------------------

async def test_uri_keys_load_once_and_serve_without_network(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        for _ in range(20):
            assert (await keys.key_for(RSA_KID, "RS256")).kid == RSA_KID
            assert (await keys.key_for(EC_KID, "ES256")).kty == "EC"
        assert server.hits["jwks"] == 1
        status = keys.status()
        assert status["keys"] == 2 and status["last_error"] is None and status["source"] == "uri"
        text = json.dumps(status)
        assert cached_key("RS256")[1]["n"] not in text


async def test_kid_naming_another_key_type_is_not_a_miss(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        with pytest.raises(TokenError) as info:
            await keys.key_for(RSA_KID, "ES256")
        assert info.value.reason == "alg_key_mismatch"
        assert server.hits["jwks"] == 1


async def test_down_cold_is_backend_unavailable_and_retries_after_backoff(server: JwksServer) -> None:
    server.status = 503
    clock = FakeClock()
    async with running(key_set_for(remote_tenant(server, error_retry=5.0), clock=clock)) as keys:
        await keys.start()   # does not raise: the service starts and answers 503s while cold
        assert server.hits["jwks"] == 1
        with pytest.raises(BackendUnavailable) as info:
            await keys.key_for(RSA_KID, "RS256")
        assert info.value.backend == "jwks" and "503" in info.value.detail
        assert server.hits["jwks"] == 1          # inside the backoff: no new fetch per request
        server.status = 200
        clock.now += 5.0
        assert (await keys.key_for(RSA_KID, "RS256")).kid == RSA_KID
        assert server.hits["jwks"] == 2


async def test_down_warm_serves_stale_keys(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        server.status = 500
        assert await keys.refresh() is True
        assert server.hits["jwks"] == 2
        assert (await keys.key_for(RSA_KID, "RS256")).kid == RSA_KID
        status = keys.status()
        assert status["stale"] is True and "500" in status["last_error"] and status["keys"] == 2


def refreshes(tenant: str, result: str) -> float:
    labels = {"tenant": tenant, "result": result}
    return REGISTRY.get_sample_value("pavilion_extauthz_key_refreshes_total", labels) or 0.0


def stale_gauge(tenant: str) -> float | None:
    return REGISTRY.get_sample_value("pavilion_extauthz_keys_stale", {"tenant": tenant})


async def test_refreshes_are_counted_and_keys_stale_is_1_while_serving_last_good_keys(server: JwksServer) -> None:
    tenant = dataclasses.replace(remote_tenant(server), id="metrics-stale")
    async with running(key_set_for(tenant)) as keys:
        await keys.start()
        assert (refreshes("metrics-stale", "ok"), refreshes("metrics-stale", "error")) == (1.0, 0.0)
        assert stale_gauge("metrics-stale") == 0.0
        server.status = 500
        assert await keys.refresh() is True
        assert (refreshes("metrics-stale", "ok"), refreshes("metrics-stale", "error")) == (1.0, 1.0)
        assert stale_gauge("metrics-stale") == 1.0 and keys.status()["stale"] is True
        server.status = 200
        assert await keys.refresh() is True
        assert (refreshes("metrics-stale", "ok"), refreshes("metrics-stale", "error")) == (2.0, 1.0)
        assert stale_gauge("metrics-stale") == 0.0
    assert stale_gauge("metrics-stale") is None   # closed (tenant removed): nothing left to alert on


async def test_a_cold_failing_key_set_counts_errors_but_is_not_stale(server: JwksServer) -> None:
    server.status = 503
    async with running(key_set_for(dataclasses.replace(remote_tenant(server), id="metrics-cold"))) as keys:
        await keys.start()
        assert refreshes("metrics-cold", "error") == 1.0 and refreshes("metrics-cold", "ok") == 0.0
        assert stale_gauge("metrics-cold") == 0.0   # no last good keys: checks answer 503, not stale keys


async def test_closing_a_replaced_key_set_leaves_its_successor_s_stale_value(server: JwksServer) -> None:
    tenant = dataclasses.replace(remote_tenant(server), id="metrics-replaced")
    async with running(key_set_for(tenant)) as old, running(key_set_for(tenant)) as new:
        await old.start()
        await new.start()   # a changed tenant: the new key set starts before the old one is retired
        server.status = 500
        await new.refresh()
        assert stale_gauge("metrics-replaced") == 1.0
        await old.close()
        assert stale_gauge("metrics-replaced") == 1.0
        await new.close()
        assert stale_gauge("metrics-replaced") is None


async def test_unknown_kid_flood_refetches_once_per_cooldown(server: JwksServer) -> None:
    clock = FakeClock()
    async with running(key_set_for(remote_tenant(server, cooldown=30.0), clock=clock)) as keys:
        await keys.start()
        for i in range(50):
            with pytest.raises(UnknownKey):
                await keys.key_for(f"flood-{i}", "RS256")
        assert server.hits["jwks"] == 2
        clock.now += 29.0
        with pytest.raises(UnknownKey):
            await keys.key_for("flood-x", "RS256")
        assert server.hits["jwks"] == 2
        clock.now += 1.0
        with pytest.raises(UnknownKey):
            await keys.key_for("flood-y", "RS256")
        assert server.hits["jwks"] == 3


async def test_concurrent_misses_share_one_fetch(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        _, rotated_jwk = generate_key("ES256", kid="rotated")
        server.jwks = {"keys": [*IDP.jwks()["keys"], rotated_jwk]}
        server.delay = 0.2
        found = await asyncio.gather(*(keys.key_for("rotated", "ES256") for _ in range(25)))
        assert {k.kid for k in found} == {"rotated"}
        assert server.hits["jwks"] == 2


async def test_concurrent_cold_requests_share_one_fetch(server: JwksServer) -> None:
    server.delay = 0.2
    async with running(key_set_for(remote_tenant(server))) as keys:
        found = await asyncio.gather(*(keys.key_for(EC_KID, "ES256") for _ in range(25)))
        assert len(found) == 25 and server.hits["jwks"] == 1


async def test_cancelled_request_does_not_cancel_the_shared_fetch(server: JwksServer) -> None:
    server.delay = 0.3
    async with running(key_set_for(remote_tenant(server))) as keys:
        waiter = asyncio.ensure_future(keys.key_for(EC_KID, "ES256"))
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (await keys.key_for(EC_KID, "ES256")).kid == EC_KID
        assert server.hits["jwks"] == 1


async def test_removed_keys_are_forgotten_on_refresh(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        server.jwks = {"keys": [cached_key("ES256")[1]]}
        await keys.refresh()
        with pytest.raises(UnknownKey):
            await keys.key_for(RSA_KID, "RS256")


async def test_redirect_refused(server: JwksServer) -> None:
    server.redirect_to = server.jwks_url.replace("jwks.json", "elsewhere.json")
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="redirect"):
            await keys.key_for(RSA_KID, "RS256")


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_document_refused(server: JwksServer, chunked: bool) -> None:
    server.chunked = chunked
    server.body_override = json.dumps({"keys": IDP.jwks()["keys"], "pad": "x" * 5000}).encode()
    async with running(key_set_for(remote_tenant(server, max_bytes=4096))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="larger than 4096"):
            await keys.key_for(RSA_KID, "RS256")


async def test_announced_oversize_refused_before_reading(server: JwksServer) -> None:
    # The body stalls after 100 bytes: only the Content-Length check can answer before the timeout.
    server.declared_length = 10_000_000
    async with running(key_set_for(remote_tenant(server, timeout=1.5))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="larger than"):
            await keys.key_for(RSA_KID, "RS256")


async def test_too_many_keys_refused_and_last_good_kept(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server, max_keys=2))) as keys:
        await keys.start()
        server.jwks = {"keys": [*IDP.jwks()["keys"], cached_key("ES384")[1]]}
        await keys.refresh()
        assert "cap" in keys.status()["last_error"]
        assert (await keys.key_for(RSA_KID, "RS256")).kid == RSA_KID


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"keys": "x"}', b"\xff"])
async def test_unusable_documents_refused(server: JwksServer, body: bytes) -> None:
    server.body_override = body
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable):
            await keys.key_for(RSA_KID, "RS256")


async def test_timeout_is_a_fetch_error(server: JwksServer) -> None:
    server.delay = 2.0
    async with running(key_set_for(remote_tenant(server, timeout=0.2))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="TimeoutError"):
            await keys.key_for(RSA_KID, "RS256")


async def test_unsafe_keys_dropped_at_load(server: JwksServer) -> None:
    server.jwks = {"keys": [*IDP.jwks()["keys"], SYMMETRIC, weak_rsa_jwk(), wrong_curve_jwk()]}
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        assert keys.status()["kids"] == sorted([RSA_KID, EC_KID])
        assert {d["kid"] for d in keys.status()["dropped"]} == {"sym", "weak", "curve"}
        for kid, alg in (("sym", "RS256"), ("weak", "RS256"), ("curve", "ES256")):
            with pytest.raises(UnknownKey):
                await keys.key_for(kid, alg)


async def test_only_unusable_keys_is_a_failed_load(server: JwksServer) -> None:
    server.jwks = {"keys": [SYMMETRIC]}
    async with running(key_set_for(remote_tenant(server))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="no usable key"):
            await keys.key_for("sym", "RS256")


@pytest.mark.parametrize(("header", "ttl"), [("max-age=5", 60.0), ("max-age=120", 120.0),
                                             ("max-age=9999999", 3600.0), (None, 300.0), ("no-store", 60.0)])
async def test_cache_control_honoured_within_bounds(server: JwksServer, header: str | None, ttl: float) -> None:
    server.cache_control = header
    async with running(key_set_for(remote_tenant(server, min_refresh=60.0, max_refresh=3600.0))) as keys:
        await keys.start()
        assert keys.status()["ttl"] == ttl


async def test_background_refresh_ahead_of_expiry(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server, refresh=0.3, min_refresh=0.2))) as keys:
        await keys.start()
        _, rotated_jwk = generate_key("ES256", kid="bg-rotated")
        server.jwks = {"keys": [rotated_jwk]}
        async with asyncio.timeout(10):
            while "bg-rotated" not in keys.status()["kids"]:  # noqa: ASYNC110 - polls what status() shows
                await asyncio.sleep(0.05)
        assert server.hits["jwks"] >= 2
    hits = server.hits["jwks"]
    await asyncio.sleep(0.5)
    assert server.hits["jwks"] == hits   # close() stopped the refresher


# -- discovery ----------------------------------------------------------------------------------

async def test_discovery_fetches_jwks_uri(server: JwksServer) -> None:
    async with running(key_set_for(remote_tenant(server, discovery=True, issuer=server.base))) as keys:
        await keys.start()
        assert (await keys.key_for(EC_KID, "ES256")).kid == EC_KID
        assert server.hits["discovery"] == 1 and server.hits["jwks"] == 1
        assert keys.status()["origin"] == server.jwks_url


async def test_discovery_from_the_issuer_url(server: JwksServer) -> None:
    tenant = IDP.tenant(issuer=server.base, jwks=JwksSource(discovery=server.base + "/", allow_http_loopback=True))
    async with running(key_set_for(tenant)) as keys:
        await keys.start()
        assert (await keys.key_for(EC_KID, "ES256")).kid == EC_KID
        assert server.hits["discovery"] == 1


async def test_discovery_issuer_must_equal_tenant_issuer(server: JwksServer) -> None:
    server.issuer = "https://evil.test"
    async with running(key_set_for(remote_tenant(server, discovery=True, issuer=server.base))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="issuer"):
            await keys.key_for(EC_KID, "ES256")
        assert server.hits["jwks"] == 0


async def test_discovery_jwks_uri_must_be_https(server: JwksServer) -> None:
    server.jwks_uri = "http://idp.example.test/jwks.json"
    async with running(key_set_for(remote_tenant(server, discovery=True, issuer=server.base))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="plain http"):
            await keys.key_for(EC_KID, "ES256")


# -- file ---------------------------------------------------------------------------------------

def write_jwks(path: Path, jwks: dict[str, Any], mtime: float) -> None:
    path.write_text(json.dumps(jwks))
    os.utime(path, (mtime, mtime))


async def test_file_source_reloads_when_mtime_changes(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, {"keys": [cached_key("RS256")[1]]}, 1_000_000)
    clock = FakeClock()
    async with running(key_set_for(IDP.tenant(jwks=JwksSource(file=str(path))), clock=clock)) as keys:
        await keys.start()
        assert (await keys.key_for(RSA_KID, "RS256")).kid == RSA_KID
        with pytest.raises(UnknownKey):
            await keys.key_for(EC_KID, "ES256")
        loaded_at = keys.status()["last_fetch"]
        await keys.refresh()
        assert keys.status()["last_fetch"] == loaded_at   # unchanged mtime: not read or parsed again
        write_jwks(path, {"keys": [cached_key("ES256")[1]]}, 1_000_100)
        clock.now += 31
        assert (await keys.key_for(EC_KID, "ES256")).kid == EC_KID
        with pytest.raises(UnknownKey):
            await keys.key_for(RSA_KID, "RS256")


async def test_file_source_missing_is_cold_and_bad_file_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    async with running(key_set_for(IDP.tenant(jwks=JwksSource(file=str(path))))) as keys:
        await keys.start()
        with pytest.raises(BackendUnavailable, match="could not be read"):
            await keys.key_for(RSA_KID, "RS256")
        write_jwks(path, IDP.jwks(), 1_000_000)
        assert await keys.refresh() is True
        path.write_text("{half written")
        os.utime(path, (1_000_200, 1_000_200))
        assert await keys.refresh() is True
        assert "not JSON" in keys.status()["last_error"]
        assert (await keys.key_for(RSA_KID, "RS256")).kid == RSA_KID
        write_jwks(path, IDP.jwks(), 1_000_000)   # the good file back, byte for byte, same mtime
        assert await keys.refresh() is True
        assert keys.status()["last_error"] is None and keys.status()["stale"] is False


async def test_inline_key_set_never_fetches() -> None:
    keys = key_set_for(IDP.tenant())
    await keys.start()
    with pytest.raises(UnknownKey):
        await keys.key_for("nope", "RS256")
    assert keys.status()["fetches"] == 0
    await keys.close()


async def test_missing_kid_uses_the_single_fitting_key() -> None:
    keys = key_set_for(IDP.tenant())
    assert (await keys.key_for(None, "ES256")).kid == EC_KID
    many = key_set_for(IDP.tenant(jwks=JwksSource.of_keys([cached_key("ES256")[1], cached_key("ES256", "b")[1]])))
    with pytest.raises(UnknownKey):
        await many.key_for(None, "ES256")


def test_key_set_type() -> None:
    assert isinstance(key_set_for(IDP.tenant()), KeySet)
    assert isinstance(parse_jwk(cached_key("ES256")[1]).public_key, ec.EllipticCurvePublicKey)


JSON_ODDITIES: list[Any] = [None, True, 0, -1, 1.5, "", "é", "AQAB", [], ["sig"], {}, {"a": 1}, "A" * 3000]


@pytest.mark.parametrize("base", ["RS256", "ES256", "EdDSA"])
def test_any_json_value_in_any_member_is_rejected_cleanly(base: str) -> None:
    # A hostile JWKS must never raise anything but RejectedKey from the parser (which would abort the load).
    good = cached_key(base)[1]
    for name in [*good, "use", "key_ops", "d"]:
        for value in JSON_ODDITIES:
            with contextlib.suppress(RejectedKey):
                parse_jwk(good | {name: value})
