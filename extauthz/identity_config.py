"""The `identity:` section of ext_authz's config file: how to sign identity assertions for upstreams.

    identity:
      issuer: https://gateway.example.com          # the assertions' iss
      key: {file: keys/identity.pem}                # relative to this file; or
      # key: {pkcs11: {module: /usr/lib/softhsm/libsofthsm2.so, token: pavilion, key: identity-2026,
      #                pin_file: secrets/hsm-pin}}
      algorithm: PS256                              # optional, RSA keys only (default RS256)
      lifetime: 5m                                  # an assertion's longest life (10s .. 1h)
      header: x-pavilion-identity                   # the request header the upstream reads

Only paths are named here, never key bytes or the PIN: the key file and the PIN file are read when
the key is loaded (extauthz/identity_keys.py), and a change of either is followed without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from extauthz.config import _HEADER_NAME, RESERVED_HEADERS, _absolute, _Invalid, _policy, _seconds, _string
from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import Mapping, Node, parse_documents

__all__ = ["DEFAULT_HEADER", "FileKeySource", "IdentitySettings", "KeySource", "Pkcs11KeySource", "load_identity",
           "parse_identity"]

DEFAULT_HEADER = "x-pavilion-identity"
MIN_LIFETIME, MAX_LIFETIME = 10.0, 3600.0
_ALGORITHMS = ("RS256", "PS256")


@dataclass(frozen=True)
class FileKeySource:
    """A PEM private key (PKCS#8 or traditional, unencrypted) in a file."""

    file: str
    where: Location = field(default=Location(""), compare=False)  # the config's `key:`, for errors at load

    def describe(self) -> str:
        return f"key file {self.file}"


@dataclass(frozen=True)
class Pkcs11KeySource:
    """A key pair inside a PKCS#11 token: the private key (by label) never leaves it."""

    module: str
    token: str
    key: str
    pin_file: str
    where: Location = field(default=Location(""), compare=False)

    def describe(self) -> str:
        return f"PKCS#11 key {self.key!r} in token {self.token!r} ({self.module})"


KeySource = FileKeySource | Pkcs11KeySource


@dataclass(frozen=True)
class IdentitySettings:
    issuer: str
    key: KeySource
    algorithm: str | None = None  # RSA only: RS256 (default) or PS256; EC keys sign with their curve's ES alg
    lifetime: float = 300.0
    header: str = DEFAULT_HEADER

    def __post_init__(self) -> None:
        parts = urlsplit(self.issuer)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError("must be an http(s) URL with a host and no query or fragment", path="issuer")
        if not MIN_LIFETIME <= self.lifetime <= MAX_LIFETIME:
            raise ConfigError(f"must be between {MIN_LIFETIME:.0f}s and {MAX_LIFETIME / 60:.0f}m", path="lifetime")
        if self.algorithm is not None and self.algorithm not in _ALGORITHMS:
            raise ConfigError(f"must be one of {', '.join(_ALGORITHMS)} (an EC key's algorithm follows its curve)",
                              path="algorithm")
        if not _HEADER_NAME.fullmatch(self.header) or self.header != self.header.lower():
            raise ConfigError(f"{self.header!r} is not a lower-case HTTP header name", path="header")
        if self.header in RESERVED_HEADERS or self.header.startswith(":"):
            raise ConfigError(f"header {self.header!r} is reserved", path="header")


def _file_key(node: Node, base_dir: Path) -> FileKeySource:
    return FileKeySource(file=_absolute(base_dir / _string(node)), where=node.loc)


def _pkcs11_key(node: Node, base_dir: Path) -> Pkcs11KeySource:
    readers: dict[str, Callable[[Node], Any]] = {
        "module": _string, "token": _string, "key": _string,
        "pin_file": lambda n: _absolute(base_dir / _string(n)),
    }
    source: Pkcs11KeySource = _policy(node, lambda **kw: Pkcs11KeySource(**kw, where=node.loc), readers,
                                      "module, token, key, pin_file",
                                      required=("module", "token", "key", "pin_file"))
    return source


def _key(node: Node, base_dir: Path) -> KeySource:
    if not isinstance(node, Mapping) or len(node.items) != 1 or node.items[0][0].text not in ("file", "pkcs11"):
        raise _Invalid("must be {file: PEM} or {pkcs11: {module, token, key, pin_file}}", node)
    name, value = node.items[0]
    try:
        return _file_key(value, base_dir) if name.text == "file" else _pkcs11_key(value, base_dir)
    except _Invalid as exc:
        # A ConfigError, not _Invalid: `_policy` would keep only the first level of the field's path.
        raise ConfigError(str(exc), location=exc.node.loc, path=f"identity.key.{name.text}{exc.field}") from None


def parse_identity(node: Node, base_dir: Path) -> IdentitySettings:
    """The settings of an `identity:` node; ConfigError at the field's file:line:col."""
    readers: dict[str, Callable[[Node], Any]] = {
        "issuer": _string, "key": lambda n: _key(n, base_dir), "algorithm": _string, "lifetime": _seconds,
        "header": _string,
    }
    try:
        settings: IdentitySettings = _policy(node, IdentitySettings, readers, "issuer, key, lifetime, header",
                                             required=("issuer", "key"))
    except _Invalid as exc:
        raise ConfigError(str(exc), location=exc.node.loc, path=f"identity{exc.field}") from None
    return settings


def load_identity(path: str | Path) -> IdentitySettings | None:
    """The `identity:` section of the YAML file at `path` (None when it has none)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", location=Location(str(path))) from None
    documents = parse_documents(text, str(path))
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise ConfigError("the file must hold one mapping", location=Location(str(path), 1, 1))
    for key, value in documents[0].items:
        if key.text == "identity":
            return parse_identity(value, path.parent)
    return None
