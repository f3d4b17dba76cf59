"""Identity assertions in the running service: where the settings come from, the published key set, and
key rotation followed without a restart.

The settings are the `identity:` section of `--identity FILE` when given (with `--xds`, the only way:
where the signing key lives is a fact of the host ext_authz runs on, so the key's path, the HSM module
and the PIN file are named beside it rather than in the route YAML), else of the `--config` file.

Rotation: the settings file and the key file (or, for a PKCS#11 key, the PIN file) are looked at every
`FOLLOW_SECONDS` (a stat, in a thread). On a change the settings are read again and the key loaded; from
then on assertions are signed with it, and the replaced key's public half stays in the JWKS for the
assertion lifetime plus a minute. A file that cannot be read, or a key that cannot sign, keeps the old key.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from extauthz.identity_assertion import IdentityAssertions
from extauthz.identity_config import FileKeySource, IdentitySettings, load_identity
from extauthz.identity_keys import load_signing_key
from pavilion.errors import ConfigError
from pavilion.log import get_logger

__all__ = ["FOLLOW_SECONDS", "check_identity", "follow_identity", "identity_routes", "identity_source",
           "start_identity"]

log = get_logger(__name__)

FOLLOW_SECONDS = 2.0
_JWKS_MAX_AGE = 60  # seconds an upstream may keep the key set; it fetches again on a kid it does not know


def identity_source(identity_file: str, config_file: str) -> str:
    """The file whose `identity:` section holds the settings ("" for none)."""
    return identity_file or config_file


def read_identity(identity_file: str, config_file: str) -> IdentitySettings | None:
    """The identity settings; ConfigError when `--identity FILE` has none, or both files have some."""
    if identity_file:
        settings = load_identity(identity_file)
        if settings is None:
            raise ConfigError("the file has no `identity:` section", path="identity")
        if config_file and load_identity(config_file) is not None:
            raise ConfigError(f"identity is set both here and in {config_file}: keep one", path="identity")
        return settings
    return load_identity(config_file) if config_file else None


def check_identity(identity_file: str, config_file: str) -> None:
    """Load the settings and open the key once (PIN read, token logged in), so a broken key config fails
    at start with exit 2 rather than in each worker; ConfigError says what and where."""
    settings = read_identity(identity_file, config_file)
    if settings is not None:
        load_signing_key(settings).close()


async def start_identity(identity_file: str, config_file: str) -> IdentityAssertions | None:
    settings = await asyncio.to_thread(read_identity, identity_file, config_file)
    return await IdentityAssertions.start(settings) if settings is not None else None


def _stamps(paths: tuple[str, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            found = os.stat(path)  # follows links: a Kubernetes `..data` swap changes the inode
            stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _watched(source: str, settings: IdentitySettings) -> tuple[str, ...]:
    key = settings.key
    return (source, key.file if isinstance(key, FileKeySource) else key.pin_file)


async def follow_identity(identity_file: str, config_file: str, assertions: IdentityAssertions,
                          stop: asyncio.Event, interval: float = FOLLOW_SECONDS) -> None:
    """Reload the settings and key whenever the settings file or the key file changes, until `stop`."""
    source = identity_source(identity_file, config_file)
    paths = _watched(source, assertions.settings)
    last = await asyncio.to_thread(_stamps, paths)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        stamps = await asyncio.to_thread(_stamps, paths)
        if stamps == last:
            continue
        try:
            settings = await asyncio.to_thread(read_identity, identity_file, config_file)
        except ConfigError as exc:
            log.error("identity_rejected", errors=str(exc).splitlines(), kept=assertions.ring.current.kid)
            last = stamps
            continue
        if settings == assertions.settings and stamps[1:] == last[1:]:
            last = stamps  # another section of the file changed (tenants): the key is not loaded again
            continue
        await assertions.reload(settings)
        paths = _watched(source, assertions.settings)
        last = await asyncio.to_thread(_stamps, paths)


def identity_routes(assertions: IdentityAssertions) -> list[web.RouteDef]:
    """The admin pages upstreams verify assertions with: the JWK Set, and a minimal discovery document."""

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(assertions.ring.jwks(), headers={"Cache-Control": f"max-age={_JWKS_MAX_AGE}"})

    async def discovery(_request: web.Request) -> web.Response:
        issuer = assertions.settings.issuer
        document: dict[str, Any] = {
            "issuer": issuer, "jwks_uri": f"{issuer.rstrip('/')}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": sorted({key["alg"] for key in assertions.ring.jwks()["keys"]}),
        }
        return web.json_response(document, headers={"Cache-Control": f"max-age={_JWKS_MAX_AGE}"})

    return [web.get("/.well-known/jwks.json", jwks), web.get("/.well-known/openid-configuration", discovery)]
