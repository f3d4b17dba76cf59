"""The one exception tree of Pavilion.

    PavilionError
    ├── ConfigError              bad configuration; carries where (file:line:col) and what
    │   └── ConfigErrors         several ConfigError found in one pass
    ├── TokenError               a credential is refused; carries a reason code
    │   ├── MalformedToken
    │   ├── ExpiredToken
    │   ├── BadSignature
    │   ├── UnknownKey
    │   └── RevokedToken
    └── BackendUnavailable       Redis, a key endpoint, or any dependency did not answer in time

Only servicers turn these into gRPC statuses or ext_authz denials; everything below them raises.
"""

from __future__ import annotations

from dataclasses import dataclass


class PavilionError(Exception):
    """Base of every error Pavilion raises on purpose."""


@dataclass(frozen=True)
class Location:
    """Where in a config file something is; line and column are 1-based, 0 when unknown."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.file


class ConfigError(PavilionError):
    """One problem in a config file: `FILE:LINE:COL: field.path: message`."""

    def __init__(self, message: str, *, location: Location | None = None, path: str = "") -> None:
        self.message = message
        self.location = location
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [str(self.location)] if self.location else []
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigErrors(ConfigError):
    """Every problem found in one validation pass, in file order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class TokenError(PavilionError):
    """A credential is refused. `reason` is a short stable code used as a metric label and log field."""

    reason = "invalid_token"

    def __init__(self, description: str, *, reason: str | None = None) -> None:
        self.description = description
        if reason is not None:
            self.reason = reason
        super().__init__(f"{self.reason}: {description}")


class MalformedToken(TokenError):
    reason = "malformed"


class ExpiredToken(TokenError):
    reason = "expired"


class BadSignature(TokenError):
    reason = "bad_signature"


class UnknownKey(TokenError):
    reason = "unknown_kid"


class RevokedToken(TokenError):
    reason = "revoked"


class BackendUnavailable(PavilionError):
    """A dependency (Redis, a JWKS endpoint) failed or timed out. `backend` names which."""

    def __init__(self, backend: str, detail: str = "") -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"{backend} unavailable" + (f": {detail}" if detail else ""))
