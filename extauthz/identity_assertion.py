"""Signed identity assertions for upstreams: a short-lived JWT saying who the verified caller is.

A route asks for one with the ext_authz context extension `identity_audience` (the assertion's `aud`).
For such a route an allowed answer carries, in the `identity.header` request header (default
`x-pavilion-identity`), a JWT signed with the gateway's key:

    header  {alg, kid (RFC 7638 thumbprint), typ: "JWT"}
    claims  iss, aud, sub, tenant, client (when the token names one), iat, nbf, jti,
            exp = min(now + lifetime, the token's exp), scope (the token's scopes, space-separated)

never the incoming token itself. Every allowed answer of a service with identity on removes the header
from the request (the authorizer adds it to the cached OK outcome's `headers_to_remove`), so a client's
own copy never reaches an upstream; an answer with an assertion sets it instead.

Signing takes tens of microseconds with a file key, and a PKCS#11 call blocks for as long as the HSM
takes: it runs on one thread of its own (a PKCS#11 session is not for concurrent use), never on the event
loop. Assertions are cached per (verified token, audience): `outcome_now` (no coroutine, for `check_now`)
serves a cached one, and past half its life starts signing its successor in the background, so a busy
token never waits for the signer; requests that miss share one signing (single flight). An assertion
bounded by its token's exp is never re-signed: a new one could not live longer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from extauthz import decision
from extauthz.decision import Outcome
from extauthz.identity_config import IdentitySettings
from extauthz.identity_keys import ROTATION_SKEW, KeyRing, SigningKey, load_signing_key
from extauthz.signing import compact_jws, jws_signing_input
from pavilion.errors import BackendUnavailable, ConfigError
from pavilion.log import get_logger
from pavilion.metrics import NAMESPACE, Counter

if TYPE_CHECKING:
    from extauthz.authorizer import Admission

__all__ = ["AUDIENCE_EXTENSION", "IdentityAssertions", "assertion_claims"]

log = get_logger(__name__)

AUDIENCE_EXTENSION = "identity_audience"
MAX_AUDIENCE = 256
SIGNED = Counter(f"{NAMESPACE}_extauthz_identity_signatures",
                 "Identity assertions signed, by result (ok, error) and why (first, refresh)", ["result", "why"])
_STALE_MARGIN = 5.0  # an assertion this close to its exp is not handed out (it may expire on the way)


@dataclass(frozen=True, slots=True)
class _Entry:
    admission: Any  # the Admission it was made for (held, so its id is not reused while cached)
    outcome: Outcome
    refresh_at: float
    stale_at: float


def assertion_claims(issuer: str, audience: str, admission: Admission, now: float, lifetime: float,
                     jti: str) -> dict[str, Any]:
    """The claims of the assertion for a verified token (see the module doc)."""
    outcome = admission.outcome
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": issuer, "aud": audience, "sub": outcome.subject, "tenant": outcome.tenant,
        "iat": issued, "nbf": issued, "exp": min(int(now + lifetime), int(admission.verified.expires_at)),
        "jti": jti,
    }
    if outcome.client is not None:
        claims["client"] = outcome.client
    if admission.scopes:
        claims["scope"] = " ".join(sorted(admission.scopes))
    return claims


@functools.lru_cache(maxsize=1024)
def _audience_ok(audience: str) -> bool:
    ok = 0 < len(audience) <= MAX_AUDIENCE and audience.isprintable() and audience == audience.strip()
    if not ok:
        log.warning("route_identity_invalid", detail="the identity_audience extension is empty, longer than "
                    f"{MAX_AUDIENCE} characters, or holds control characters or surrounding spaces")
    return ok


class IdentityAssertions:
    """Makes and caches the assertions; owns the signing key (its ring) and the thread that signs."""

    def __init__(self, settings: IdentitySettings, key: SigningKey, *, executor: ThreadPoolExecutor | None = None,
                 clock: Callable[[], float] = time.time, max_entries: int = 50_000) -> None:
        self.settings = settings
        self.header = settings.header
        self.ring = KeyRing(key, clock)
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-sign")
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[tuple[int, str], _Entry] = {}
        self._signing: dict[tuple[int, str], asyncio.Task[Outcome]] = {}
        self._unavailable = decision.unavailable("identity_unavailable")
        self._invalid = decision.unavailable("route_identity_invalid")

    @classmethod
    async def start(cls, settings: IdentitySettings, clock: Callable[[], float] = time.time) -> IdentityAssertions:
        """Load the key on the signing thread (a PKCS#11 session then lives on the thread that uses it)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-sign")
        try:
            key = await asyncio.get_running_loop().run_in_executor(executor, load_signing_key, settings)
        except ConfigError:
            executor.shutdown(wait=False)
            raise
        log.info("identity_key_loaded", kid=key.kid, alg=key.alg, source=settings.key.describe())
        return cls(settings, key, executor=executor, clock=clock)

    def __len__(self) -> int:
        return len(self._entries)

    def outcome_now(self, admission: Admission, audience: str) -> Outcome | None:
        """The cached answer with an assertion for `audience`; None when one must be signed first."""
        entry = self._entries.get((id(admission), audience))
        if entry is None or entry.admission is not admission:
            return None
        now = self._clock()
        if now >= entry.refresh_at:
            if now >= entry.stale_at:
                return None
            self._signing_task((id(admission), audience), admission, audience, "refresh")
        return entry.outcome

    async def outcome(self, admission: Admission, audience: str) -> Outcome:
        """The answer with an assertion for `audience`, signed now if none is cached; a 503 when it cannot be."""
        found = self.outcome_now(admission, audience)
        if found is not None:
            return found
        if not _audience_ok(audience):
            return self._invalid
        task = self._signing_task((id(admission), audience), admission, audience, "first")
        try:
            # Shielded: a request that gives up does not cancel the signing the others wait for.
            return await asyncio.shield(task)
        except BackendUnavailable:
            return self._unavailable  # logged by the task

    def _signing_task(self, key: tuple[int, str], admission: Admission, audience: str,
                      why: str) -> asyncio.Task[Outcome]:
        task = self._signing.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._sign(key, admission, audience, why))
            self._signing[key] = task
            task.add_done_callback(functools.partial(self._signed, key))
        return task

    def _signed(self, key: tuple[int, str], task: asyncio.Task[Outcome]) -> None:
        self._signing.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed background refresh is logged, not left for asyncio to warn of

    async def _sign(self, key: tuple[int, str], admission: Admission, audience: str, why: str) -> Outcome:
        settings, signer = self.settings, self.ring.current
        now = self._clock()
        claims = assertion_claims(settings.issuer, audience, admission, now, settings.lifetime,
                                  secrets.token_urlsafe(16))
        header = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
        signing_input = jws_signing_input(json.dumps(header, separators=(',', ':')).encode(),
                                          json.dumps(claims, separators=(',', ':')).encode())
        try:
            signature = await asyncio.get_running_loop().run_in_executor(self._executor, signer.sign, signing_input)
        except BackendUnavailable as exc:
            SIGNED.labels(result="error", why=why).inc()
            log.error("identity_signing_failed", kid=signer.kid, detail=str(exc), why=why)
            raise
        SIGNED.labels(result="ok", why=why).inc()
        base = admission.outcome
        assertion = compact_jws(signing_input, signature)
        outcome = replace(base, headers=(*base.headers, (self.header, assertion)),
                          headers_to_remove=tuple(name for name in base.headers_to_remove if name != self.header))
        exp = claims["exp"]
        if exp < int(now + settings.lifetime):  # bounded by the token: a new one could not live longer
            refresh_at = stale_at = float(exp)
        else:
            refresh_at, stale_at = now + settings.lifetime / 2, exp - min(_STALE_MARGIN, settings.lifetime / 4)
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= self._max_entries:
            del entries[next(iter(entries))]  # the oldest signed
        entries[key] = _Entry(admission, outcome, refresh_at, stale_at)
        return outcome

    async def reload(self, settings: IdentitySettings | None) -> bool:
        """Sign with the key (and issuer, lifetime) of `settings` from now on; the replaced key stays in the
        JWKS until every assertion it signed has expired. False (the current key kept) when it cannot load."""
        if settings is None or settings.header != self.header:
            log.error("identity_change_needs_restart", detail="turning identity on or off, or changing its header, "
                      "takes a restart; the current identity settings stay")
            return False
        try:
            key = await asyncio.get_running_loop().run_in_executor(self._executor, load_signing_key, settings)
        except ConfigError as exc:
            log.error("identity_key_rejected", errors=str(exc).splitlines(), kept=self.ring.current.kid)
            return False
        previous = self.settings
        old = self.ring.rotate(key, max(previous.lifetime, settings.lifetime) + ROTATION_SKEW)
        self.settings = settings
        if (settings.issuer, settings.lifetime) != (previous.issuer, previous.lifetime):
            self._entries.clear()
        # Queued behind any signature in progress on the one signing thread.
        self._executor.submit(old.close)
        log.info("identity_key_loaded", kid=key.kid, alg=key.alg, previous=old.kid, source=settings.key.describe())
        return True

    async def close(self) -> None:
        for task in list(self._signing.values()):
            task.cancel()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.ring.current.close)
        self._executor.shutdown(wait=True)
