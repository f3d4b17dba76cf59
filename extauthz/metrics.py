"""Prometheus metrics of the ext_authz service's background state, for alerting (see docs/extauthz.md).

Check answers are counted in extauthz.service (`pavilion_extauthz_checks_total`). Tenant labels are
bounded: tenant ids come from config.
"""

from __future__ import annotations

from pavilion.metrics import NAMESPACE, Counter, Gauge
from pavilion.workers import shared_directory

__all__ = ["INTROSPECTIONS", "KEYS_STALE", "KEY_REFRESHES", "forget_keys_stale", "revocation_subscribed",
           "set_keys_stale"]

KEY_REFRESHES = Counter(f"{NAMESPACE}_extauthz_key_refreshes",
                        "Fetch attempts of a tenant's keys by result (ok, error)", ["tenant", "result"])
INTROSPECTIONS = Counter(f"{NAMESPACE}_extauthz_introspections",
                         "Token introspection calls by result (active, inactive, refused_claims, error, refused)",
                         ["tenant", "result"])
KEYS_STALE = Gauge(f"{NAMESPACE}_extauthz_keys_stale",
                   "1 while the tenant serves its last good keys because refreshes fail", ["tenant"],
                   multiprocess_mode="livemax")
_revocation_subscribed: Gauge | None = None


def revocation_subscribed() -> Gauge:
    """`pavilion_extauthz_revocation_subscribed`, registered by the first Redis store: with the in-memory
    store the metric is absent, where an unset gauge would be exposed as a 0 that alerts."""
    global _revocation_subscribed
    if _revocation_subscribed is None:
        # livemin: with --workers, 0 as soon as one live worker has lost its subscription.
        _revocation_subscribed = Gauge(
            f"{NAMESPACE}_extauthz_revocation_subscribed",
            "1 while the Redis pub/sub keeping the local revocation cache current is subscribed "
            "(0: every check asks Redis)", multiprocess_mode="livemin")
    return _revocation_subscribed


# A changed tenant gets a new key set that starts before the old one is closed: only the key set that
# last wrote a tenant's value may take it away.
_stale_writer: dict[str, object] = {}


def set_keys_stale(tenant: str, writer: object, stale: bool) -> None:
    _stale_writer[tenant] = writer
    KEYS_STALE.labels(tenant).set(1 if stale else 0)


def forget_keys_stale(tenant: str, writer: object) -> None:
    """The tenant's key set `writer` is closed: a removed tenant must not keep alerting."""
    if _stale_writer.get(tenant) is not writer:
        return
    del _stale_writer[tenant]
    if shared_directory():
        KEYS_STALE.labels(tenant).set(0)  # the worker's file keeps the child whatever remove() does: zero it
    else:
        KEYS_STALE.remove(tenant)
