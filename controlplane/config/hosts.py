"""Which Envoy domain pattern covers which, so `hosts:` acts as a filter on each route.

Envoy picks exactly one virtual host per request (exact domain, then the longest suffix wildcard,
then prefix wildcard, then `*`) and never falls through to another. Teams write routes in separate
files, and a team adding `hosts: [api.example.com]` must not hide everyone's `hosts: ["*"]` routes
from that host. So each virtual host gets every route whose patterns cover all of its domains.
"""

from __future__ import annotations

__all__ = ["covers", "normalized"]


def normalized(host: str) -> str:
    """Envoy matches hosts case-insensitively; one spelling avoids duplicate-domain rejections."""
    return host.strip().lower()


def covers(pattern: str, domain: str) -> bool:
    """True when every Host matching `domain` also matches `pattern` (both Envoy domain patterns)."""
    if pattern == domain or pattern == "*":
        return True
    if domain == "*":
        return False
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if domain.startswith("*"):
            return domain[1:].endswith(suffix)
        if domain.endswith("*"):
            return False
        # A wildcard stands for at least one character in Envoy.
        return len(domain) > len(suffix) and domain.endswith(suffix)
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        if domain.endswith("*"):
            return domain[:-1].startswith(prefix)
        if domain.startswith("*"):
            return False
        return len(domain) > len(prefix) and domain.startswith(prefix)
    return False
