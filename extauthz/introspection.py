"""Asking a tenant's IdP about a token (OAuth 2.0 Token Introspection, RFC 7662).

One `Introspector` per introspecting tenant, kept by the tenant generation (`tenant_set.Tenants`) like its
key set. A call is a POST of `token=...&token_type_hint=access_token` with `client_secret_basic`
authentication: https only (http to loopback when the tenant allows it), no redirects, a timeout, a byte
cap on the answer, and a strict JSON object (no duplicate members) as the only acceptable body.

What is remembered here is only what protects the IdP: a refused token (inactive, or active but failing a
rule) for `negative_cache` seconds, and one call in flight per token (concurrent checks of the same
uncached token share it). An accepted token is cached by the caller (the verified-token cache), so a
cached token costs no coroutine at all. Errors (timeouts, 5xx, unreadable answers, our credentials
refused) are never cached: the next check asks again.

The client secret is re-read when its file changes (a Kubernetes Secret's `..data` swap, an edit): before a
call, at most once every SECRET_CHECK_SECONDS, a stat of the file (following symlinks) in a thread compares its
stamp with the last one seen, and a changed file is read there too. A new file that is empty or unreadable
keeps the secret in use (logged, once per change of the file). Checked before calling rather than after a
401: the new secret is used from the first call after the swap, and an IdP that has rotated before the file
did is not asked twice per token.

Nothing here logs the token, the client secret or the IdP's answer body.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp

from extauthz.introspection_claims import introspected_token
from extauthz.keys import KeySet
from extauthz.metrics import INTROSPECTIONS
from extauthz.tenant import IntrospectionPolicy, Tenant, check_fetch_url, read_secret_file
from extauthz.tokens import strict_json_object
from extauthz.verify import VerifiedToken
from pavilion.errors import BackendUnavailable, ConfigError, MalformedToken, TokenError
from pavilion.log import get_logger

__all__ = ["MAX_ANSWER_BYTES", "IntrospectionRefused", "Introspector", "basic_credentials"]

log = get_logger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
MAX_NEGATIVE_ENTRIES = 10_000
# Calls to one IdP at once; more wait for a connection within the same timeout (a flood of made-up tokens
# reaches the IdP at a bounded rate, and the excess answers 503).
MAX_CALLS_AT_ONCE = 32
_CHUNK = 16 * 1024
SECRET_CHECK_SECONDS = 1.0  # the longest a rotated secret file goes unnoticed, once calls are made
Stamp = tuple[int, ...]
SessionFactory = Callable[[], aiohttp.ClientSession]


class IntrospectionRefused(BackendUnavailable):
    """The IdP refused our client credentials (HTTP 401 or 403): a configuration problem, not the token's."""


def basic_credentials(client_id: str, secret: str) -> str:
    """The Authorization value of client_secret_basic: both form-encoded first (RFC 6749 section 2.3.1)."""
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _session() -> aiohttp.ClientSession:
    # trust_env=False: proxy variables must not send tokens somewhere else.
    return aiohttp.ClientSession(trust_env=False, connector=aiohttp.TCPConnector(limit=MAX_CALLS_AT_ONCE))


class Introspector:
    """Introspection for one tenant. `close()` when the tenant generation retires it."""

    def __init__(self, tenant: Tenant, keys: KeySet, session_factory: SessionFactory = _session,
                 clock: Callable[[], float] = time.time) -> None:
        if tenant.introspection is None:
            raise ValueError(f"tenant {tenant.id} has no introspection")
        self.tenant = tenant
        self.policy: IntrospectionPolicy = tenant.introspection
        self._keys = keys
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._clock = clock
        self._secret = self.policy.client_secret
        self._authorization = basic_credentials(self.policy.client_id, self._secret)
        self._secret_stamp: Stamp = ()  # unknown: the first call looks at the file
        self._secret_checked = -SECRET_CHECK_SECONDS - 1.0  # time.monotonic() of the last look
        self.secret_reloads = 0
        self._inflight: dict[bytes, asyncio.Task[VerifiedToken]] = {}
        self._refused: OrderedDict[bytes, tuple[TokenError, float]] = OrderedDict()
        self.calls = 0  # requests sent to the IdP (for tests and /keys)

    async def verified(self, token: str, digest: bytes) -> VerifiedToken:
        """The token's claims as the IdP vouches for them, checked against the tenant's rules.

        TokenError (token_inactive or a claim rule) for a refused token; BackendUnavailable
        (IntrospectionRefused when the IdP refuses our credentials) when the IdP cannot answer.
        """
        refused = self._refused.get(digest)
        if refused is not None:
            if refused[1] > self._clock():
                # A new exception each time: re-raising one object would grow its traceback without end.
                raise TokenError(refused[0].description, reason=refused[0].reason)
            del self._refused[digest]
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(token, digest))
            self._inflight[digest] = task
            task.add_done_callback(lambda done: self._forget(digest, done))
        # Shielded: one caller cancelled (Envoy's timeout) must not cancel the call the others wait for.
        return await asyncio.shield(task)

    def _forget(self, digest: bytes, task: asyncio.Task[VerifiedToken]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved, so a failure nobody awaited any more is not reported as lost

    async def _ask(self, token: str, digest: bytes) -> VerifiedToken:
        try:
            answer = await self._call(token)
        except IntrospectionRefused as exc:
            INTROSPECTIONS.labels(self.tenant.id, "refused").inc()
            log.error("introspection_refused", tenant=self.tenant.id, detail=exc.detail,
                      fix="check the tenant's introspection client_id and client secret")
            raise
        except BackendUnavailable as exc:
            INTROSPECTIONS.labels(self.tenant.id, "error").inc()
            log.warning("introspection_unavailable", tenant=self.tenant.id, detail=exc.detail)
            raise
        try:
            verified = introspected_token(answer, self.tenant, self._clock())
        except TokenError as exc:
            result = "inactive" if exc.reason == "token_inactive" else "refused_claims"
            INTROSPECTIONS.labels(self.tenant.id, result).inc()
            self._remember_refusal(digest, exc)
            raise
        INTROSPECTIONS.labels(self.tenant.id, "active").inc()
        return verified

    def _remember_refusal(self, digest: bytes, exc: TokenError) -> None:
        if self.policy.negative_cache <= 0:
            return
        self._refused[digest] = (exc, self._clock() + self.policy.negative_cache)
        self._refused.move_to_end(digest)
        while len(self._refused) > MAX_NEGATIVE_ENTRIES:
            self._refused.popitem(last=False)

    async def _endpoint(self) -> str:
        endpoint = self.policy.endpoint
        if endpoint is None:
            endpoint = await self._keys.introspection_endpoint()
            # A discovered endpoint obeys the same rules as a configured one.
            why = check_fetch_url(endpoint, allow_http_loopback=self.policy.allow_http_loopback)
            if why:
                raise BackendUnavailable("introspection", f"the discovered introspection_endpoint {why}")
        return endpoint

    async def _credentials(self) -> str:
        """The Authorization value, after a look at the secret file when the last is over SECRET_CHECK_SECONDS old."""
        now = time.monotonic()
        if now - self._secret_checked >= SECRET_CHECK_SECONDS:
            self._secret_checked = now  # concurrent calls meanwhile use the secret in hand
            path = self.policy.client_secret_file
            stamp, secret = await asyncio.to_thread(_changed_secret, path, self._secret_stamp)
            if stamp != self._secret_stamp:
                self._secret_stamp = stamp
                if isinstance(secret, ConfigError):
                    log.warning("introspection_secret_unreadable", tenant=self.tenant.id, detail=secret.message,
                                kept="the secret in use")
                elif secret is not None and secret != self._secret:
                    self._secret = secret
                    self._authorization = basic_credentials(self.policy.client_id, secret)
                    self.secret_reloads += 1
                    log.info("introspection_secret_reloaded", tenant=self.tenant.id, file=path)
        return self._authorization

    async def _call(self, token: str) -> dict[str, Any]:
        endpoint = await self._endpoint()
        if self._session is None:
            self._session = self._session_factory()
        authorization = await self._credentials()
        self.calls += 1
        headers = {"Authorization": authorization, "Accept": "application/json",
                   "Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode({"token": token, "token_type_hint": "access_token"})
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout)
        try:
            async with self._session.post(endpoint, data=body.encode("ascii"), headers=headers, timeout=timeout,
                                          allow_redirects=False) as resp:
                if resp.status in (401, 403):
                    raise IntrospectionRefused("introspection", f"the IdP refused our client credentials "
                                                                f"(HTTP {resp.status})")
                if resp.status != 200:
                    raise BackendUnavailable("introspection", f"the IdP answered HTTP {resp.status}"
                                             + (" (redirects are not followed)" if 300 <= resp.status < 400 else ""))
                if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
                    raise BackendUnavailable("introspection", f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                raw = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise BackendUnavailable("introspection",
                                                 f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable("introspection", f"the IdP could not be reached: {type(exc).__name__}") from exc
        try:
            return strict_json_object(bytes(raw), "the introspection answer")
        except MalformedToken as exc:
            raise BackendUnavailable("introspection", exc.description) from None

    def status(self) -> dict[str, Any]:
        """For the admin page: where and how it asks. Never the secret."""
        return {"tenant": self.tenant.id, "endpoint": self.policy.endpoint or "discovered",
                "client_id": self.policy.client_id, "calls": self.calls, "negative_entries": len(self._refused),
                "secret_reloads": self.secret_reloads}

    async def close(self) -> None:
        # Calls in flight end first (within the timeout): checks waiting on them must get their answer,
        # not a cancellation.
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def _changed_secret(path: str, seen: Stamp) -> tuple[Stamp, str | ConfigError | None]:
    """(the file's stamp, its secret) when the stamp differs from `seen`; (seen, None) when it does not.
    The secret is a ConfigError when the file cannot be read or holds no usable secret. Blocking: in a thread."""
    try:
        st = os.stat(path)  # follows symlinks: a swapped `..data` link is a new inode
    except OSError as exc:
        stamp: Stamp = (-1, exc.errno or 0)
        return (seen, None) if stamp == seen else (stamp, ConfigError(
            f"cannot read the secret file {path}: {exc.strerror or type(exc).__name__}"))
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if stamp == seen:
        return seen, None
    try:
        return stamp, read_secret_file(path)
    except ConfigError as exc:
        return stamp, exc
