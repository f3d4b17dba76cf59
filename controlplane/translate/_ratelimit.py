"""Route `rate_limits` → Envoy rate-limit actions, and the ratelimit rules that match what they send.

One `RouteRateLimit` at index i of route R makes Envoy send one descriptor, entries in this order:

    route=R, limit=i, [tenant=<t>], [client=<c>], [subject=<s>], [remote_address=<client ip>]

`route` and `limit` are generic keys (the index keeps two limits of one route apart); tenant,
client and subject come from ext_authz's dynamic metadata (namespace `envoy.filters.http.ext_authz`,
keys `tenant`, `client` and `subject`, set by extauthz/service.py); the client address from Envoy's
`remote_address` action. `ratelimit_rules` builds, for the same route and index, the rule with key
path `route=R → limit=i → tenant → client → subject → remote_address` (the facts given only), the
last ones key-only, so each distinct tenant (client, subject, address) value gets its own counter:
the ratelimit service's usual matching (exact key and value, then key alone) finds exactly that rule.

If ext_authz sent no tenant (a route it does not check), Envoy sends no descriptor for that limit:
loading refuses `per: tenant` on `auth: none` routes for that reason. A valid token always has a
subject, but not always a client (`client_id`, else `azp`, may be absent): the client action carries
`default_value: "-"` so such a request is still counted, all tokens without a client sharing the
counter of the value "-", instead of the descriptor being dropped and the request escaping the limit.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.metadata.v3 import metadata_pb2

from controlplane.config.model import Config, Route, RouteRateLimit
from ratelimit.matching import RateLimitConfig
from ratelimit.rules import Limit, Rule

__all__ = [
    "DESCRIPTOR_KEYS", "LIMIT_KEY", "METADATA_NAMESPACE", "NO_CLIENT", "ROUTE_KEY", "ratelimit_config",
    "ratelimit_rules", "route_rate_limits",
]

METADATA_NAMESPACE = "envoy.filters.http.ext_authz"
ROUTE_KEY = "route"
LIMIT_KEY = "limit"
# `per` fact → the descriptor key Envoy sends for it (remote_address is fixed by Envoy's action).
DESCRIPTOR_KEYS = {"tenant": "tenant", "client": "client", "subject": "subject", "client_ip": "remote_address"}
# The descriptor value of a token without a client id: one shared counter, never an uncounted request.
NO_CLIENT = "-"

_Action = rc.RateLimit.Action


def route_rate_limits(route: Route) -> list[rc.RateLimit]:
    """The Envoy `RouteAction.rate_limits` of `route`, one per `rate_limits` entry."""
    return [rc.RateLimit(actions=_actions(route.name, index, limit)) for index, limit in enumerate(route.rate_limits)]


def _actions(route: str, index: int, limit: RouteRateLimit) -> list[rc.RateLimit.Action]:
    actions = [
        _Action(generic_key=_Action.GenericKey(descriptor_key=ROUTE_KEY, descriptor_value=route)),
        _Action(generic_key=_Action.GenericKey(descriptor_key=LIMIT_KEY, descriptor_value=str(index))),
    ]
    for fact in limit.per:
        if fact == "client_ip":
            actions.append(_Action(remote_address=_Action.RemoteAddress()))
            continue
        key = metadata_pb2.MetadataKey(key=METADATA_NAMESPACE, path=[metadata_pb2.MetadataKey.PathSegment(key=fact)])
        actions.append(_Action(metadata=_Action.MetaData(
            descriptor_key=DESCRIPTOR_KEYS[fact], metadata_key=key, source=_Action.MetaData.DYNAMIC,
            default_value=NO_CLIENT if fact == "client" else "")))
    return actions


def ratelimit_rules(config: Config) -> tuple[Rule, ...]:
    """The rules for every route's `rate_limits`, in the `ratelimit.domain`, ordered by route name.

    Empty when there is no `ratelimit:` section. Pure: the same config gives equal rules.
    """
    if config.ratelimit is None:
        return ()
    domain = config.ratelimit.domain
    rules: list[Rule] = []
    for route in sorted(config.routes, key=lambda r: r.name):
        for index, limit in enumerate(route.rate_limits):
            key_path = ((ROUTE_KEY, route.name), (LIMIT_KEY, str(index)),
                        *((DESCRIPTOR_KEYS[fact], None) for fact in limit.per))
            rules.append(Rule(
                domain=domain,
                key_path=key_path,
                limits=(Limit(unit=limit.unit, requests_per_unit=limit.requests,
                              unit_multiplier=limit.unit_multiplier, algorithm=limit.algorithm, burst=limit.burst),),
                shadow_mode=limit.shadow_mode,
                on_backend_error=limit.on_backend_error,
                source=route.source,
            ))
    return tuple(rules)


def ratelimit_config(config: Config) -> RateLimitConfig:
    """`ratelimit_rules` as the lookup the ratelimit service uses; the domain is known even without rules."""
    result = RateLimitConfig(ratelimit_rules(config))
    if config.ratelimit is not None:
        result.add_domain(config.ratelimit.domain)
    return result
