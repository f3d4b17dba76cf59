"""A bearer token carried as a WebSocket subprotocol, for browsers (their WebSocket API cannot set an
Authorization header):

    Sec-WebSocket-Protocol: base64url.bearer.authorization.pavilion.dev.<base64url(token)>, chat.v1

Kubernetes' API server does the same with `base64url.bearer.authorization.k8s.io.`. The token is base64url
without padding (a subprotocol is an HTTP token: no `=`, no `/`). Read only on a route whose context
extensions carry `websocket` (the control plane sets it on `websocket: true` routes) and only on an upgrade
request, and only by `Authorizer.check` when the request has no Authorization header: `check_now`, the
cached path, never looks at it.

The allowed answer sets `sec-websocket-protocol` to the other entries (or removes it when none remain), so
the service chooses among the real subprotocols and never sees the token.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from extauthz import decision
from extauthz.decision import Outcome

__all__ = ["PROTOCOL_HEADER", "TOKEN_PREFIX", "WEBSOCKET_EXTENSION", "SubprotocolToken", "subprotocol_token"]

TOKEN_PREFIX = "base64url.bearer.authorization.pavilion.dev."
WEBSOCKET_EXTENSION = "websocket"  # the context extension of a `websocket: true` route
PROTOCOL_HEADER = "sec-websocket-protocol"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class SubprotocolToken:
    token: str
    remaining: str | None  # the header value the service gets; None: remove the header


def _is_upgrade(headers: Mapping[str, str]) -> bool:
    # HTTP/1.1 `Upgrade: websocket`; an HTTP/2 or HTTP/3 extended CONNECT reaches the filters already turned
    # into that form by Envoy's codec (controlplane/translate/_websocket.py).
    value = headers.get("upgrade")
    return value is not None and any(part.strip().lower() == "websocket" for part in value.split(","))


def subprotocol_token(headers: Mapping[str, str],
                      context_extensions: Mapping[str, str]) -> SubprotocolToken | Outcome | None:
    """The token offered as a subprotocol, with what remains of the header; the refusal of a malformed or
    second one; None when there is none to take (not a websocket route, not an upgrade, no such entry)."""
    if WEBSOCKET_EXTENSION not in context_extensions:
        return None
    value = headers.get(PROTOCOL_HEADER)
    if value is None or TOKEN_PREFIX not in value or not _is_upgrade(headers):
        return None
    # Envoy joins repeated headers with commas, as a client may list the entries in one.
    entries = [entry.strip(" \t") for entry in value.split(",")]
    offered = [entry for entry in entries if entry.startswith(TOKEN_PREFIX)]
    if len(offered) > 1:
        return decision.invalid_request("multiple_credentials", "more than one credential")
    token = _decoded(offered[0][len(TOKEN_PREFIX):])
    if token is None:  # never the token itself in the description or a log: it may be one, mangled
        return decision.invalid_token("malformed_websocket_token",
                                      "the websocket subprotocol token is not a base64url bearer token")
    rest = [entry for entry in entries if entry and not entry.startswith(TOKEN_PREFIX)]
    return SubprotocolToken(token, ", ".join(rest) if rest else None)


def _decoded(text: str) -> str | None:
    """The token of a base64url entry (no padding), or None when it is not one, or not a token68 once decoded."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        token = raw.decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return token if decision.TOKEN68.fullmatch(token) else None
