"""Where key sets come from: inline text, a file, a JWKS URL, or OIDC discovery.

Each loader returns parsed keys (see jwk.py) and how long they may be kept. Remote fetches use
aiohttp with a timeout, never follow redirects, speak https only (http to loopback when the
source allows it), and stop reading at a byte cap. A loader raises FetchError with a message
that is safe to log and to show on the admin page.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from extauthz.jwk import LoadedKeys, parse_jwk_set
from extauthz.tenant import JwksSource, check_fetch_url

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)
_CHUNK = 16 * 1024


class FetchError(Exception):
    """A key source could not be read or its content is unusable."""


@dataclass(frozen=True)
class Loaded:
    keys: LoadedKeys
    max_age: float | None   # seconds the source allows caching, None when it did not say
    origin: str             # the URL or file the keys came from


def cache_max_age(header: str | None) -> float | None:
    """Seconds from a Cache-Control header: max-age (or s-maxage), 0 for no-store/no-cache, else None."""
    if not header:
        return None
    if _NO_CACHE.search(header):
        return 0.0
    match = _MAX_AGE.search(header)
    return float(match.group(1)) if match else None


def _json_document(body: bytes, what: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FetchError(f"{what} is not JSON") from exc


def _keys_of(doc: Any, source: JwksSource, what: str) -> LoadedKeys:
    try:
        return parse_jwk_set(doc, max_keys=source.max_keys)
    except ValueError as exc:
        raise FetchError(f"{what}: {exc}") from exc


async def fetch_json(session: aiohttp.ClientSession, url: str, source: JwksSource,
                     what: str) -> tuple[Any, float | None]:
    """(document, max-age) of one GET, with every limit of `source` applied."""
    why = check_fetch_url(url, allow_http_loopback=source.allow_http_loopback)
    if why:
        raise FetchError(f"{what} URL {why}")
    timeout = aiohttp.ClientTimeout(total=source.timeout)
    try:
        async with session.get(url, allow_redirects=False, timeout=timeout,
                               headers={"Accept": "application/json, application/jwk-set+json"}) as resp:
            if 300 <= resp.status < 400:
                raise FetchError(f"{what} answered a redirect (HTTP {resp.status}); redirects are not followed")
            if resp.status != 200:
                raise FetchError(f"{what} answered HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > source.max_bytes:
                raise FetchError(f"{what} is larger than {source.max_bytes} bytes")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > source.max_bytes:
                    raise FetchError(f"{what} is larger than {source.max_bytes} bytes")
            max_age = cache_max_age(resp.headers.get("Cache-Control"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FetchError(f"{what} could not be fetched: {type(exc).__name__}") from exc
    return _json_document(bytes(body), what), max_age


def discovery_url(configured: str) -> str:
    """The discovery document URL: as configured, or the issuer URL plus the well-known path (OIDC Discovery 4)."""
    if "/.well-known/" in configured:
        return configured
    return configured.rstrip("/") + "/.well-known/openid-configuration"


class KeyLoader(Protocol):
    remote: bool    # needs an HTTP session
    static: bool    # never changes: no refresh, no refetch on an unknown kid

    async def load(self, session: aiohttp.ClientSession | None) -> Loaded | None:
        """New keys, or None when the source is unchanged since the last load."""
        ...


class InlineLoader:
    remote = False
    static = True

    def __init__(self, source: JwksSource) -> None:
        doc = json.loads(source.inline or "{}")
        self._loaded = Loaded(_keys_of(doc, source, "inline JWK Set"), None, "inline")

    @property
    def loaded(self) -> Loaded:
        return self._loaded

    async def load(self, session: aiohttp.ClientSession | None) -> Loaded | None:
        return self._loaded


class FileLoader:
    remote = False
    static = False

    def __init__(self, source: JwksSource) -> None:
        self._source = source
        self._path = source.file or ""
        self._stamp: tuple[int, int] | None = None

    async def load(self, session: aiohttp.ClientSession | None) -> Loaded | None:
        result = await asyncio.to_thread(self._read_if_changed)
        if result is None:
            return None
        stamp, body = result
        loaded = Loaded(_keys_of(_json_document(body, self._path), self._source, self._path), None, self._path)
        self._stamp = stamp   # only once parsed, so a half-written file is read again next time
        return loaded

    def _read_if_changed(self) -> tuple[tuple[int, int], bytes] | None:
        try:
            stat = os.stat(self._path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return None
            if stat.st_size > self._source.max_bytes:
                raise FetchError(f"{self._path} is larger than {self._source.max_bytes} bytes")
            with open(self._path, "rb") as handle:
                body = handle.read(self._source.max_bytes + 1)
        except OSError as exc:
            raise FetchError(f"{self._path} could not be read: {exc.strerror or type(exc).__name__}") from exc
        if len(body) > self._source.max_bytes:
            raise FetchError(f"{self._path} is larger than {self._source.max_bytes} bytes")
        return stamp, body


class UriLoader:
    remote = True
    static = False

    def __init__(self, source: JwksSource) -> None:
        self._source = source

    async def load(self, session: aiohttp.ClientSession | None) -> Loaded | None:
        if session is None:
            raise FetchError("no HTTP session")
        url = self._source.uri or ""
        doc, max_age = await fetch_json(session, url, self._source, "JWKS")
        return Loaded(_keys_of(doc, self._source, "JWKS"), max_age, url)


class DiscoveryLoader:
    """OIDC discovery: the document's `issuer` must equal the tenant's, then its `jwks_uri` is fetched."""

    remote = True
    static = False

    def __init__(self, source: JwksSource, issuer: str) -> None:
        self._source = source
        self._issuer = issuer
        # The document's introspection_endpoint (RFC 8414), for a tenant whose introspection names none.
        self.introspection_endpoint: str | None = None

    async def load(self, session: aiohttp.ClientSession | None) -> Loaded | None:
        if session is None:
            raise FetchError("no HTTP session")
        doc, doc_age = await fetch_json(session, discovery_url(self._source.discovery or ""), self._source,
                                        "discovery document")
        if not isinstance(doc, dict):
            raise FetchError("discovery document is not a JSON object")
        if doc.get("issuer") != self._issuer:
            raise FetchError("discovery document issuer does not equal the tenant's issuer")
        endpoint = doc.get("introspection_endpoint")
        self.introspection_endpoint = endpoint if isinstance(endpoint, str) else None
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError("discovery document has no jwks_uri")
        jwks, jwks_age = await fetch_json(session, jwks_uri, self._source, "JWKS")
        ages = [age for age in (doc_age, jwks_age) if age is not None]
        return Loaded(_keys_of(jwks, self._source, "JWKS"), min(ages) if ages else None, jwks_uri)


def loader_for(source: JwksSource, issuer: str) -> KeyLoader:
    if source.inline is not None:
        return InlineLoader(source)
    if source.file is not None:
        return FileLoader(source)
    if source.uri is not None:
        return UriLoader(source)
    return DiscoveryLoader(source, issuer)
