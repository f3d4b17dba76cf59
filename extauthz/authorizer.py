"""One Check, start to finish: credential, tenant, verification (cached), route admission, revocation.

Route admission is the route's tenants, then what it requires of the token (scopes, claim values:
`route_requirements`); both are local, so a token the route refuses costs no revocation round trip.

The order keeps the cheap, local steps first: a request without a single well-formed bearer token
never reaches a parser; an issuer no tenant has is refused without any key fetch; a cached token
skips the signature; and revocation is asked on every request, cache hit or not.

`check_now` is the common case without a coroutine: a cached token whose revocation the store can tell
from local state. Anything else (a first verification, a store that must ask Redis) goes through `check`.

DPoP (RFC 9449, extauthz/dpop_*.py): a request with `Authorization: DPoP` goes through `check` only; its
token's verification is cached under a key of its own (`dpop_token_digest`), so `check_now`, which
knows bearer tokens only, never finds a DPoP-bound token. A token bound to a DPoP key, or of a tenant
whose `dpop.required` is set, is refused as a bearer token before it is cached, so `check_now` needs no
DPoP test at all. The proof is checked on every request (each is new), then its jti is recorded.

With a tenant's `dpop.nonce`, an allowed DPoP answer whose proof carried the previous window's nonce also
gives the current one (`DPoP-Nonce` on the response, RFC 9449 section 9): a client sending at least one
request a window never meets a `use_dpop_nonce` 401 after its first. A proof with the current nonce gets
the shared cached outcome as it is (no header: the client has it already).

A route with the `identity_audience` extension gets its allowed answer with a signed identity assertion
(extauthz/identity_assertion.py), cached per token and audience; without `identity:` configured, or on a
route without the extension, the path is as before but for one attribute test (and one map lookup).

A browser's websocket carries its token as a subprotocol (extauthz/websocket_token.py): `check` takes it
only when the request has no Authorization header, on a route with the `websocket` extension, and checks it
as that bearer token; its allowed answer is the shared one plus a Sec-WebSocket-Protocol without the token.
`check_now` never looks at it: a request with a cached bearer token in Authorization is decided by that
header alone, and its Sec-WebSocket-Protocol goes to the service as the client sent it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from extauthz import decision
from extauthz.cert_binding import UnverifiableBinding, binding_refusal, token_bindings
from extauthz.decision import Outcome, split_tenants
from extauthz.dpop_check import dpop_credentials, dpop_only_challenge, is_dpop, request_method, request_url
from extauthz.dpop_nonce import Nonces
from extauthz.dpop_proof import InvalidProof, verify_proof
from extauthz.dpop_replay import ReplayStore, replay_key, replay_store_for
from extauthz.identity_assertion import AUDIENCE_EXTENSION, IdentityAssertions
from extauthz.introspection import IntrospectionRefused
from extauthz.introspection_tenant import is_compact_jws, opaque_token_tenant
from extauthz.keys import KeySet
from extauthz.revocation import RevocationQuery, RevocationStore
from extauthz.route_requirements import route_requirement, token_scopes
from extauthz.tenant import DEFAULT_DPOP_ALGORITHMS, Tenant
from extauthz.tenant_set import Tenants
from extauthz.token_cache import VerifiedTokenCache, dpop_token_digest, token_digest
from extauthz.verify import VerifiedToken, unverified_issuer, verify_token
from extauthz.websocket_token import PROTOCOL_HEADER, WEBSOCKET_EXTENSION, SubprotocolToken, subprotocol_token
from pavilion.errors import BackendUnavailable, TokenError
from pavilion.log import get_logger

log = get_logger(__name__)

Verify = Callable[[str, Tenant, KeySet, float], Awaitable[VerifiedToken]]
_BEARER = ("Bearer ", "bearer ")
_MAX_NONCE_ANSWERS = 10_000
_MAX_WEBSOCKET_ANSWERS = 10_000


@dataclass(frozen=True, slots=True)
class Admission:
    """What a verified token admits, computed once and cached: its revocation keys, its scopes (for routes
    that require some), the client certificate it is bound to (RFC 8705) and its OK outcome."""

    verified: VerifiedToken
    query: RevocationQuery
    outcome: Outcome
    scopes: frozenset[str]
    bound_to: str | None = None  # the x5t#S256 thumbprint of the only client certificate it is valid with
    jkt: str | None = None  # the thumbprint of the DPoP key it is bound to (cached for DPoP requests only)


class Authorizer:
    def __init__(self, tenants: Tenants, store: RevocationStore, cache: VerifiedTokenCache | None = None,
                 clock: Callable[[], float] = time.time, verify: Verify = verify_token,
                 replay: ReplayStore | None = None, identity: IdentityAssertions | None = None) -> None:
        self.tenants = tenants
        self.identity = identity  # signs assertions for routes with `identity_audience` (identity_assertion.py)
        self.store = store
        self.replay = replay if replay is not None else replay_store_for(store)
        self._nonces: Nonces | None = None  # made at the first proof that needs a nonce
        # Allowed answers carrying the current nonce, by id of the cached outcome they extend (`_with_nonce`).
        self._nonce_answers: dict[int, tuple[Outcome, Outcome]] = {}
        self._nonce_answers_for = ""
        # Allowed websocket answers without the subprotocol token, by cached outcome and remaining entries.
        self._websocket_answers: dict[tuple[int, str | None], tuple[Outcome, Outcome]] = {}
        self.cache = cache if cache is not None else VerifiedTokenCache(clock=clock)
        self._clock = clock
        self._verify = verify

    def use(self, tenants: Tenants) -> None:
        """Serve with a new generation from the next request on; verifications under changed tenants miss."""
        self.tenants = tenants

    def check_now(self, headers: Mapping[str, str], path: str, context_extensions: Mapping[str, str],
                  attributes: Any = None) -> Outcome | None:
        """The answer for a cached token whose revocation the store knows locally; None for anything else
        (`check` then starts over, and answers every refusal of a malformed request). `attributes`, the
        request's AttributeContext, is read only for a certificate-bound token (its client certificate)."""
        header = headers.get("authorization")
        if header is None or header[:7] not in _BEARER or "access_token" in path:
            return None
        # No syntax check here: only a token verified before (so well-formed) can hit, and the digest of any
        # other string (a second credential, trailing spaces) misses and goes through `check`.
        cached = self.cache.get(token_digest(header[7:]))
        if cached is None:
            return None
        tenant: Tenant
        admission: Admission
        tenant, admission = cached
        tenants = self.tenants
        if not tenants.is_current(tenant):
            return None
        if admission.bound_to is not None:
            refusal = binding_refusal(admission.bound_to, attributes)
            if refusal is not None:
                return refusal
        raw = context_extensions.get("tenant")
        if raw is not None and tenant.id not in split_tenants(raw):
            return _route_refusal(tenant, tenants, split_tenants(raw))
        scopes, claims = context_extensions.get("scopes"), context_extensions.get("claims")
        if scopes is not None or claims is not None:
            refusal = _requirement_refusal(admission, scopes, claims)
            if refusal is not None:
                return refusal
        revoked = self.store.revoked_locally(admission.query)
        if revoked is False:
            identity = self.identity
            if identity is None:
                return admission.outcome
            audience = context_extensions.get(AUDIENCE_EXTENSION)
            return admission.outcome if audience is None else identity.outcome_now(admission, audience)
        return None if revoked is None else _revoked()

    async def check(self, headers: Mapping[str, str], path: str, context_extensions: Mapping[str, str],
                    attributes: Any = None) -> Outcome:
        token = decision.bearer_token(headers, path)
        if isinstance(token, Outcome):
            if WEBSOCKET_EXTENSION in context_extensions:  # a `websocket: true` route (websocket_token.py)
                offered = subprotocol_token(headers, context_extensions)
                if offered is not None:
                    return await self._check_subprotocol(offered, token, path, context_extensions, attributes)
            # Asked only when there is no bearer token: bearer requests never pay for the DPoP test.
            authorization = headers.get("authorization")
            if authorization is not None and is_dpop(authorization):
                return await self._check_dpop(authorization, headers, path, context_extensions, attributes)
            if token.reason in ("missing", "unsupported_scheme"):
                return dpop_only_challenge(token, self.tenants, context_extensions) or token
            return token
        tenants = self.tenants
        route = decision.route_tenants(context_extensions)

        found = await self._cached_or_admitted(token, token_digest(token), tenants, route)
        if isinstance(found, Outcome):
            return found
        tenant, admission = found

        # As `_admission_refusal`, written out: this is the path of every bearer check `check_now` cannot end.
        refusal = binding_refusal(admission.bound_to, attributes) if admission.bound_to is not None else None
        if refusal is None:
            refusal = _route_refusal(tenant, tenants, route)
        scopes, claims = context_extensions.get("scopes"), context_extensions.get("claims")
        if refusal is None and (scopes is not None or claims is not None):
            refusal = _requirement_refusal(admission, scopes, claims)
        if refusal is not None:
            return refusal
        try:
            if await self.store.is_revoked(admission.query):
                return _revoked()
        except BackendUnavailable as exc:
            refusal = _store_failure("revocation_store_unavailable", "store_unavailable", tenant, exc)
            if refusal is not None:
                return refusal
        if self.identity is not None:
            return await self._identified(admission, context_extensions)
        return admission.outcome

    async def _check_subprotocol(self, offered: SubprotocolToken | Outcome, without: Outcome, path: str,
                                 context_extensions: Mapping[str, str], attributes: Any) -> Outcome:
        """A websocket upgrade whose token is a subprotocol: checked as that bearer token, unless the request has
        another credential (`without` is the refusal of its Authorization header: "missing" when it has none)."""
        if isinstance(offered, Outcome):
            return offered
        if without.reason != "missing":
            return decision.invalid_request("multiple_credentials", "more than one credential")
        outcome = await self.check({"authorization": "Bearer " + offered.token}, path, context_extensions, attributes)
        return self._without_token(outcome, offered.remaining) if outcome.allowed else outcome

    def _without_token(self, outcome: Outcome, remaining: str | None) -> Outcome:
        """`outcome` (shared, cached: never changed) with the service's Sec-WebSocket-Protocol rid of the token:
        made once per outcome and remaining entries, so a client reopening its websocket reuses the answer (and
        the service its serialization)."""
        key = (id(outcome), remaining)
        entry = self._websocket_answers.get(key)
        if entry is not None and entry[0] is outcome:
            return entry[1]
        if remaining is None:
            answer = replace(outcome, headers_to_remove=(*outcome.headers_to_remove, PROTOCOL_HEADER))
        else:
            answer = replace(outcome, headers=(*outcome.headers, (PROTOCOL_HEADER, remaining)))
        if len(self._websocket_answers) >= _MAX_WEBSOCKET_ANSWERS:
            self._websocket_answers.clear()
        self._websocket_answers[key] = (outcome, answer)
        return answer

    async def _check_dpop(self, authorization: str, headers: Mapping[str, str], path: str,
                          context_extensions: Mapping[str, str], attributes: Any) -> Outcome:
        credentials = dpop_credentials(authorization, headers, path)
        if isinstance(credentials, Outcome):
            return credentials
        token, proof_text = credentials
        tenants = self.tenants
        found = await self._cached_or_admitted(token, dpop_token_digest(token), tenants,
                                               decision.route_tenants(context_extensions), dpop=True)
        if isinstance(found, Outcome):
            return decision.as_dpop(found, DEFAULT_DPOP_ALGORITHMS)
        tenant, admission = found
        policy = tenant.dpop
        now = self._clock()
        try:
            url, port_known = request_url(attributes)
            proof = verify_proof(proof_text, method=request_method(attributes), url=url, port_known=port_known,
                                 access_token=token, jkt=admission.jkt or "", policy=policy,
                                 skew=tenant.clock_skew, now=now)
        except InvalidProof as exc:
            return decision.invalid_dpop_proof(exc.reason, exc.description, policy.algorithms)
        newer: str | None = None  # a nonce to give with an allowed answer
        if policy.nonce:
            checked = await self._nonce_check(proof.nonce, tenant)
            if isinstance(checked, Outcome):
                return checked
            newer = checked
        # Remembered while the proof could still be accepted, and a second more.
        ttl = proof.iat + policy.max_age + tenant.clock_skew - now + 1.0
        try:
            first = await self.replay.first_use(replay_key(proof.jkt, proof.jti), ttl)
        except BackendUnavailable as exc:
            refusal = _store_failure("dpop_replay_store_unavailable", "dpop_store_unavailable", tenant, exc)
            if refusal is not None:
                return refusal
            first = True
        if not first:
            return decision.invalid_dpop_proof("dpop_replayed", "the proof has been used before", policy.algorithms)
        refusal = _admission_refusal(tenant, tenants, admission, context_extensions, attributes)
        if refusal is None:
            try:
                revoked = await self.store.is_revoked(admission.query)
            except BackendUnavailable as exc:
                refusal = _store_failure("revocation_store_unavailable", "store_unavailable", tenant, exc)
                revoked = False
            if refusal is None and revoked:
                refusal = _revoked()
            if refusal is None:
                outcome = admission.outcome
                if self.identity is not None:
                    outcome = await self._identified(admission, context_extensions)
                return outcome if newer is None or not outcome.allowed else self._with_nonce(outcome, newer)
        return decision.as_dpop(refusal, policy.algorithms)

    async def _cached_or_admitted(self, token: str, digest: bytes, tenants: Tenants, route: tuple[str, ...] | None,
                                  *, dpop: bool = False) -> tuple[Tenant, Admission] | Outcome:
        """The token's cached admission under the current tenants, else a new one (verified, or introspected)."""
        cached = self.cache.get(digest)
        if cached is not None and tenants.is_current(cached[0]):
            return cached
        return await self._admission(token, digest, tenants, dpop=dpop, route=route)

    async def _identified(self, admission: Admission, context_extensions: Mapping[str, str]) -> Outcome:
        """The allowed answer, with a signed identity assertion when the route asks for one."""
        audience = context_extensions.get(AUDIENCE_EXTENSION)
        if audience is None or self.identity is None:
            return admission.outcome
        return await self.identity.outcome(admission, audience)

    async def _nonce_check(self, nonce: str | None, tenant: Tenant) -> Outcome | str | None:
        """For a proof's nonce: the 401 giving a new one when it is not one this service issued lately; else
        the current nonce when the proof's is the previous window's (to give with the allowed answer), or None.
        A store failure with on_store_error allow lets the proof pass without a nonce check (None)."""
        nonces = self._nonces
        if nonces is None:
            try:
                nonces = self._nonces = Nonces(await self.replay.nonce_secret(), self._clock)
            except BackendUnavailable as exc:
                return _store_failure("dpop_nonce_store_unavailable", "dpop_store_unavailable", tenant, exc)
        refusal = nonces.refusal(nonce, tenant.dpop.algorithms)
        return refusal if refusal is not None else nonces.newer(nonce)

    def _with_nonce(self, outcome: Outcome, nonce: str) -> Outcome:
        """`outcome` (shared, cached) with a DPoP-Nonce for the client: made once per token and nonce window,
        so a client that keeps sending the previous nonce does not cost a new answer (and serialization)
        every time."""
        made = self._nonce_answers
        if self._nonce_answers_for != nonce or len(made) >= _MAX_NONCE_ANSWERS:
            made.clear()
            self._nonce_answers_for = nonce
        entry = made.get(id(outcome))
        if entry is not None and entry[0] is outcome:
            return entry[1]
        answer = decision.with_dpop_nonce(outcome, nonce)
        made[id(outcome)] = (outcome, answer)
        return answer

    async def _admission(self, token: str, digest: bytes, tenants: Tenants, dpop: bool = False,
                         route: tuple[str, ...] | None = None) -> tuple[Tenant, Admission] | Outcome:
        if tenants.introspecting and not is_compact_jws(token):
            chosen = opaque_token_tenant(tenants, route)
            if isinstance(chosen, Outcome):
                return chosen
            if chosen is not None:
                return await self._introspected(token, digest, chosen, tenants, dpop)
        try:
            issuer = unverified_issuer(token, tenants.max_token_bytes)
        except TokenError as exc:
            return decision.invalid_token(exc.reason, exc.description)
        tenant = tenants.for_issuer(issuer) if issuer is not None else None
        if tenant is None:
            return decision.invalid_token("unknown_issuer", "the token's issuer is not accepted")
        if not tenant.has_keys:
            # A tenant with no keys only introspects: its IdP vouches for its JWTs too, but only on a route
            # that names it (a token is never sent to the IdP of a tenant the route does not accept).
            refusal = _route_refusal(tenant, tenants, route)
            if refusal is not None:
                return refusal
            return await self._introspected(token, digest, tenant, tenants, dpop)
        try:
            verified = await self._verify(token, tenant, tenants.keys(tenant), self._clock())
        except TokenError as exc:
            return decision.invalid_token(exc.reason, exc.description)
        except BackendUnavailable as exc:
            log.warning("keys_unavailable", tenant=tenant.id, detail=str(exc))
            return decision.unavailable("keys_unavailable")
        return self._admitted(tenant, verified, digest, dpop, verified.expires_at)

    async def _introspected(self, token: str, digest: bytes, tenant: Tenant, tenants: Tenants,
                            dpop: bool) -> tuple[Tenant, Admission] | Outcome:
        """The admission of a token its tenant's IdP vouches for (RFC 7662); never a pass when it cannot say."""
        introspector = tenants.introspector(tenant)
        if introspector is None or tenant.introspection is None:
            log.error("introspector_missing", tenant=tenant.id)
            return decision.unavailable("introspection_unavailable")
        if len(token) > tenant.max_token_bytes:
            return decision.invalid_token("oversize", f"token is longer than {tenant.max_token_bytes} bytes")
        try:
            verified = await introspector.verified(token, digest)
        except TokenError as exc:
            return decision.invalid_token(exc.reason, exc.description)
        except IntrospectionRefused:
            return decision.unavailable("introspection_refused")  # logged loudly by the introspector
        except BackendUnavailable:
            return decision.unavailable("introspection_unavailable")
        until = min(verified.expires_at, self._clock() + tenant.introspection.cache)
        return self._admitted(tenant, verified, digest, dpop, until)

    def _admitted(self, tenant: Tenant, verified: VerifiedToken, digest: bytes, dpop: bool,
                  cache_until: float) -> tuple[Tenant, Admission] | Outcome:
        """The admission of a verified token, cached until `cache_until`; or the refusal of its bindings."""
        outcome = decision.allowed(tenant.id, verified.subject, verified.claims, tenant.claims_to_headers)
        if not outcome.allowed:
            return outcome  # a claim that cannot become a header: refused, and not cached
        try:
            bound_to, jkt = token_bindings(verified.claims)
        except UnverifiableBinding as exc:
            return decision.invalid_token("unverifiable_binding", str(exc))
        # Refused before caching: a bearer check (`check_now`) must never find these.
        if dpop and jkt is None:
            return decision.invalid_token("dpop_token_unbound", "the token is not bound to a DPoP key")
        if not dpop and jkt is not None:  # RFC 9449 section 7.2: no downgrade to bearer
            return decision.dpop_invalid_token("dpop_bound_bearer", "the token is DPoP-bound: send it with the DPoP "
                                               "scheme and a proof", tenant.dpop.algorithms)
        if not dpop and tenant.dpop.required:
            return decision.dpop_invalid_token("dpop_required", "this issuer's tokens must be DPoP-bound and sent "
                                               "with a proof", tenant.dpop.algorithms)
        if self.identity is not None:  # a client's own assertion never reaches an upstream
            outcome = replace(outcome, headers_to_remove=(*outcome.headers_to_remove, self.identity.header))
        query = RevocationQuery(tenant.id, verified.issuer, verified.subject, verified.jti, verified.issued_at)
        admission = Admission(verified, query, outcome, token_scopes(verified.claims), bound_to, jkt)
        self.cache.put(digest, tenant, admission, cache_until)
        return tenant, admission


def _admission_refusal(tenant: Tenant, tenants: Tenants, admission: Admission, context_extensions: Mapping[str, str],
                       attributes: Any) -> Outcome | None:
    """The refusal of a verified token by its certificate binding, the route's tenants or its requirements."""
    if admission.bound_to is not None:
        refusal = binding_refusal(admission.bound_to, attributes)
        if refusal is not None:
            return refusal
    refusal = _route_refusal(tenant, tenants, decision.route_tenants(context_extensions))
    scopes, claims = context_extensions.get("scopes"), context_extensions.get("claims")
    if refusal is None and (scopes is not None or claims is not None):
        refusal = _requirement_refusal(admission, scopes, claims)
    return refusal


def _store_failure(event: str, reason: str, tenant: Tenant, exc: BackendUnavailable) -> Outcome | None:
    """The answer when a store (revocation, DPoP replay) cannot tell: 503 unless the tenant says allow (None)."""
    decided = "allow" if tenant.on_store_error == "allow" else "deny"
    log.warning(event, tenant=tenant.id, detail=str(exc), decided=decided)
    return None if decided == "allow" else decision.unavailable(reason)


def _route_refusal(tenant: Tenant, tenants: Tenants, route: tuple[str, ...] | None) -> Outcome | None:
    """The refusal when the route names tenants and the token's is not one of them."""
    if route is None or tenant.id in route:
        return None
    if not any(tenants.get(t) for t in route):
        log.warning("route_tenant_unknown", route_tenants=list(route))
        return decision.unavailable("route_tenant_unknown")
    return decision.insufficient_scope("wrong_tenant", "the token's tenant is not accepted on this route")


def _requirement_refusal(admission: Admission, scopes: str | None, claims: str | None) -> Outcome | None:
    """The refusal when the route requires scopes or claim values the token lacks (or cannot be read)."""
    requirement = route_requirement(scopes, claims)
    if isinstance(requirement, Outcome):
        return requirement
    return requirement.refusal(admission.scopes, admission.verified.claims)


def _revoked() -> Outcome:
    return decision.invalid_token("revoked", "the token has been revoked")
