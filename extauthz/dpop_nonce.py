"""Resource-server DPoP nonces (RFC 9449 section 9), for tenants with `dpop: {nonce: true}`.

A nonce limits how long before its use a proof can have been made: a proof must carry a `nonce` this
service issued within the last one or two windows (60 s each), so proofs pre-made by a client whose
key was briefly misused expire with the nonce. A request whose proof has no nonce, or a stale one, is
answered 401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce` header holding
the current nonce; the client signs a new proof with it and sends the request again.

Nonces are stateless: base64url(window number, 4 bytes || HMAC-SHA256(secret, window)[:16]). The secret
comes from the replay store: random per process in memory, and with `--redis` one secret in Redis
(written once with SET NX), so a nonce issued by one replica is accepted by every other.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from extauthz import decision
from extauthz.decision import Outcome
from extauthz.tokens import b64url_encode

__all__ = ["NONCE_WINDOW", "Nonces"]

NONCE_WINDOW = 60.0
_MAC_BYTES = 16
_NONCE_CHARS = 27  # base64url of 20 bytes


class Nonces:
    """Issue the current nonce and tell whether a nonce is current or of the previous window."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time, window: float = NONCE_WINDOW) -> None:
        self._secret = secret
        self._clock = clock
        self._window = window
        self._issued: tuple[int, str] = (-1, "")

    def _nonce(self, window: int) -> str:
        raw = window.to_bytes(4, "big")
        return b64url_encode(raw + hmac.new(self._secret, raw, hashlib.sha256).digest()[:_MAC_BYTES])

    def current(self) -> str:
        window = int(self._clock() // self._window) & 0xFFFFFFFF
        if self._issued[0] != window:
            self._issued = (window, self._nonce(window))
        return self._issued[1]

    def accepts(self, nonce: object) -> bool:
        if not isinstance(nonce, str) or len(nonce) != _NONCE_CHARS:
            return False
        window = int(self._clock() // self._window) & 0xFFFFFFFF
        return any(hmac.compare_digest(nonce, self._nonce((window - back) & 0xFFFFFFFF)) for back in (0, 1))

    def newer(self, nonce: str | None) -> str | None:
        """The current nonce when an accepted `nonce` is not it (it is the previous window's); else None."""
        current = self.current()
        return None if nonce == current else current

    def refusal(self, nonce: str | None, algs: tuple[str, ...]) -> Outcome | None:
        """None when `nonce` is accepted; else the 401 `use_dpop_nonce` answer carrying the current one."""
        if self.accepts(nonce):
            return None
        if nonce is None:
            return decision.use_dpop_nonce("dpop_nonce_required", "the proof must carry the nonce given",
                                           self.current(), algs)
        return decision.use_dpop_nonce("dpop_nonce_stale", "the proof's nonce is not current", self.current(), algs)
