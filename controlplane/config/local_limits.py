"""`local_rate_limit:` of a listener or a route: a token bucket Envoy keeps itself, before ext_authz and
the ratelimit service see a request (controlplane/translate/_local_ratelimit.py makes the filters).

Only what Envoy knows before any check can be a bucket's key: the whole listener or route, or the
client's TCP address (`per: client_ip`). The token's tenant, client and subject are refused: ext_authz
would have to run first to find them, and sparing ext_authz that work is the point of a local limit.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.config import model
from controlplane.config.shape import Fields
from pavilion.errors import Location

__all__ = [
    "LOCAL_FACTS", "LOCAL_UNITS", "MAX_CLIENT_IPS", "check_local_per", "read_listener_local_rate_limit",
    "read_local_rate_limit",
]

Problem = Callable[[str, Location, str], None]

LOCAL_FACTS = ("client_ip",)
# Longer windows than an hour mean little for a bucket that each Envoy keeps in memory, forgets on a
# restart and, per client address, forgets on eviction from its LRU.
LOCAL_UNITS = ("second", "minute", "hour")
MAX_CLIENT_IPS = 1_000_000
_TOKEN_FACTS = ("tenant", "client", "subject")


def check_local_per(text: str) -> str:
    """`per` of a local limit: `client_ip`; a token fact is refused with the reason."""
    if text in _TOKEN_FACTS:
        raise ValueError(f"a local limit cannot count per {text}: Envoy knows the {text} only after ext_authz "
                         "has checked the token, and a local limit runs before ext_authz to spare it the work; "
                         "use `per: client_ip` here, or count per token facts in `rate_limits`")
    if text not in LOCAL_FACTS:
        raise ValueError(f"{text!r} is not client_ip; a local limit counts per client_ip, or for the whole "
                         "listener or route when `per` is absent")
    return text


def read_local_rate_limit(f: Fields, problem: Problem) -> model.LocalRateLimit | None:
    """The model of one `local_rate_limit` mapping, or None after reporting what is wrong."""
    requests = f.get("requests")
    burst = f.get("burst", requests)
    ok = True
    if "burst" in f and isinstance(requests, int) and burst < requests:
        problem(f"burst ({burst}) is smaller than requests ({requests}): the bucket must hold at least one "
                "unit's requests", f.at("burst"), f.path_of("burst"))
        ok = False
    per_client_ip = f.get("per") == "client_ip"
    if "max_client_ips" in f and not per_client_ip:
        problem("max_client_ips applies to `per: client_ip` only", f.at("max_client_ips"), f.path_of("max_client_ips"))
        ok = False
    if not ok or not f.complete:
        return None
    return model.LocalRateLimit(
        requests=requests, unit=f.get("unit"), burst=burst, per_client_ip=per_client_ip,
        max_client_ips=f.get("max_client_ips", model.LocalRateLimit.max_client_ips),
        shadow_mode=f.get("shadow_mode", False), source=f.loc)


def read_listener_local_rate_limit(f: Fields, problem: Problem) -> tuple[bool, model.LocalRateLimit | None]:
    """(ok, the listener's local limit or None). A `redirect_to_https` listener has none: Envoy answers its
    every request with a 301 by itself, so there is no check or counter behind it to spare."""
    if "local_rate_limit" not in f:
        return "local_rate_limit" not in f.given, None
    if "redirect_to_https" in f.given:
        problem("a redirect_to_https listener answers every request itself (a 301, nothing else runs): put "
                "local_rate_limit on the https listener", f.at("local_rate_limit"), f.path_of("local_rate_limit"))
        return False, None
    local = read_local_rate_limit(f.get("local_rate_limit"), problem)
    return local is not None, local
