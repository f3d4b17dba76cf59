"""Routes → one RouteConfiguration per listener, named after it.

Virtual hosts: each distinct domain gets every route whose `hosts` cover it (see config/hosts.py), and
domains that end up with the same routes share one virtual host, named by its sorted domains.

Order inside a virtual host (Envoy takes the first route that matches, so order decides):
1. exact `path` routes, the longer first;
2. then `prefix` and `regex` routes together, by the length of the literal text they start with
   (a prefix's whole length, a regex's leading run of plain characters: `/v1/items/[0-9]+` counts
   as 10, `/.*` as 1), the longer first, a regex before a prefix of the same length;
3. then routes with `methods` before those without, then more `headers` conditions before fewer,
   then more `query` conditions before fewer (whatever their form: exact, prefix, present...);
4. last, by route name.
So the most specific route wins whatever file it is in and wherever it is written: a catch-all
`prefix: /` or `regex: /.*` in one team's file never hides `/v1/accounts` in another's. This is the
Gateway API's precedence (exact, then longest prefix, then method, then headers, then query
parameters), with regexes placed by what they literally start with.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.config.hosts import covers, normalized
from controlplane.config.model import Config, DirectResponse, HeaderRules, Listener, Match, Redirect, Retries, Route
from controlplane.config.rules import REGEX_SPECIAL
from controlplane.translate._balancing import hash_policy
from controlplane.translate._compression import disable_compression
from controlplane.translate._conditions import header_matcher, query_matcher
from controlplane.translate._cors import CORS_FILTER, cors_policy, needs_preflight_route, preflight_route
from controlplane.translate._faults import FAULT_FILTER, route_fault
from controlplane.translate._local_ratelimit import ROUTE_FILTER as LOCAL_RATELIMIT_FILTER
from controlplane.translate._local_ratelimit import ROUTE_POLICY, local_rate_limit
from controlplane.translate._mirrors import mirror_policy
from controlplane.translate._policy import apply_route_policy, identity_headers
from controlplane.translate._protos import duration, packed, uint32
from controlplane.translate._rbac import RBAC_FILTER, needs_route_rbac, rbac_per_route
from controlplane.translate._request_body import BUFFER_FILTER, body_limit
from controlplane.translate._websocket import route_key_headers, route_upgrades

__all__ = ["literal_start", "precedence", "route_configuration", "virtual_host_routes"]

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Envoy echoes the request's Origin in Access-Control-Allow-Origin: a shared cache must keep one answer
# per origin. Appended, as the service may vary on other headers too.
VARY_ORIGIN = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="vary", value="Origin"),
                                         append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)


_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY, 302: rc.RedirectAction.FOUND, 303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT, 308: rc.RedirectAction.PERMANENT_REDIRECT,
}
HTTPS_PORT = 443


def route_configuration(item: Listener, config: Config) -> route_pb2.RouteConfiguration:
    if item.https_port is not None:
        return https_redirect_configuration(item.name, item.https_port)
    routes = [r for r in config.routes if r.listener == item.name]
    # A `hosts: ["*"]` route sits in every virtual host: build its message once.
    built = {r.name: route(r, item) for r in routes}
    if config.extauthz is not None or config.ratelimit is not None:
        identity = identity_headers(config)
        for r in routes:
            apply_route_policy(built[r.name], r, config, identity)
    for r in routes:
        if not r.compression:
            disable_compression(built[r.name], item)
    preflights = {r.name: preflight_route(built[r.name], r) for r in routes if needs_preflight_route(r)}
    return route_pb2.RouteConfiguration(
        name=item.name,
        virtual_hosts=[
            rc.VirtualHost(name=",".join(domains), domains=domains,
                           routes=[m for r in members for m in (preflights.get(r.name), built[r.name]) if m])
            for domains, members in virtual_host_routes(routes)
        ],
    )


def https_redirect_configuration(name: str, port: int) -> route_pb2.RouteConfiguration:
    """`redirect_to_https`: every request, whatever its host, gets a 301 to https on `port`."""
    action = rc.RedirectAction(https_redirect=True, response_code=rc.RedirectAction.MOVED_PERMANENTLY)
    if port != HTTPS_PORT:
        action.port_redirect = port
    everything = rc.Route(name=f"{name}/https", match=rc.RouteMatch(prefix="/"), redirect=action)
    return route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[rc.VirtualHost(name="*", domains=["*"], routes=[everything])])


def virtual_host_routes(routes: list[Route]) -> list[tuple[list[str], list[Route]]]:
    """(domains, routes in match order) per virtual host, sorted by domains."""
    named_by: dict[str, set[int]] = {}  # domain pattern → indexes of the routes naming it
    for index, item in enumerate(routes):
        for host in item.hosts:
            named_by.setdefault(normalized(host), set()).add(index)
    # Only a wildcard covers a pattern other than itself; there are few, so this stays linear-ish.
    wildcards = [p for p in named_by if "*" in p]
    groups: dict[tuple[int, ...], list[str]] = {}
    for domain in sorted(named_by):
        members = set(named_by[domain])
        for pattern in wildcards:
            if pattern != domain and covers(pattern, domain):
                members |= named_by[pattern]
        groups.setdefault(tuple(sorted(members)), []).append(domain)
    return sorted(
        (group, sorted((routes[i] for i in members), key=precedence)) for members, group in groups.items())


def precedence(item: Route) -> tuple[int, int, int, int, int, int, str]:
    """Sort key: the more specific route first (see the module docstring)."""
    match = item.match
    if match.path is not None:
        kind, length, flavour = 0, len(match.path), 0
    elif match.regex is not None:
        kind, length, flavour = 1, len(literal_start(match.regex)), 0
    else:
        kind, length, flavour = 1, len(match.prefix or "/"), 1
    return kind, -length, flavour, -bool(match.methods), -len(match.headers), -len(match.query), item.name


_OPTIONAL = set("?*{")


def literal_start(regex: str) -> str:
    """The plain text every match of `regex` begins with ("" when a top-level `|` allows others)."""
    depth = 0
    for char in regex:
        depth += (char in "([") - (char in ")]")
        if char == "|" and depth == 0:
            return ""
    text = regex.removeprefix("^")
    for index, char in enumerate(text):
        if char in REGEX_SPECIAL:
            # `s?`, `s*` and `s{0,1}` make the character before them optional.
            return text[:index - 1] if char in _OPTIONAL and index else text[:index]
    return text


def route(item: Route, listener: Listener) -> rc.Route:
    result = rc.Route(name=item.name, match=route_match(item.match))
    if item.redirect is not None:
        result.redirect.CopyFrom(redirect_action(item.redirect))
    elif item.direct_response is not None:
        result.direct_response.CopyFrom(direct_response_action(item.direct_response))
    else:
        result.route.CopyFrom(route_action(item))
    if item.cors is not None:
        result.typed_per_filter_config[CORS_FILTER].CopyFrom(packed(cors_policy(item.cors)))
        result.response_headers_to_add.append(VARY_ORIGIN)
    if item.local_rate_limit is not None:
        limit = local_rate_limit(item.local_rate_limit, f"local_ratelimit.route.{item.name}", ROUTE_POLICY)
        result.typed_per_filter_config[LOCAL_RATELIMIT_FILTER].CopyFrom(packed(limit))
    if needs_route_rbac(item):
        result.typed_per_filter_config[RBAC_FILTER].CopyFrom(packed(rbac_per_route(item, listener)))
    if item.max_request_body is not None:
        result.typed_per_filter_config[BUFFER_FILTER].CopyFrom(packed(body_limit(item.max_request_body)))
    if item.fault is not None:
        result.typed_per_filter_config[FAULT_FILTER].CopyFrom(packed(route_fault(item.fault)))
    if item.websocket:
        # What an HTTP/2 or HTTP/3 websocket lacks for the service's HTTP/1.1 upgrade (_websocket).
        result.request_headers_to_add.extend(route_key_headers())
    result.request_headers_to_add.extend(header_options(item.request_headers))
    result.request_headers_to_remove.extend(item.request_headers.remove)
    result.response_headers_to_add.extend(header_options(item.response_headers))
    result.response_headers_to_remove.extend(item.response_headers.remove)
    return result


def route_match(match: Match) -> rc.RouteMatch:
    result = rc.RouteMatch()
    if match.path is not None:
        result.path = match.path
    elif match.regex is not None:
        result.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match.regex))
    else:
        result.prefix = match.prefix or "/"
    result.headers.extend(header_matcher(header) for header in match.headers)
    result.query_parameters.extend(query_matcher(parameter) for parameter in match.query)
    if len(match.methods) == 1:
        result.headers.append(_exact_header(":method", match.methods[0]))
    elif match.methods:
        # Envoy's regex match is a full match, so a plain alternation needs no anchors.
        alternation = regex_pb2.RegexMatcher(regex="|".join(sorted(set(match.methods))))
        methods = string_pb2.StringMatcher(safe_regex=alternation)
        result.headers.append(rc.HeaderMatcher(name=":method", string_match=methods))
    return result


def _exact_header(name: str, value: str) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value))


def route_action(item: Route) -> rc.RouteAction:
    result = rc.RouteAction()
    if len(item.backends) == 1:
        result.cluster = item.backends[0].service
    else:
        result.weighted_clusters.CopyFrom(rc.WeightedCluster(clusters=[
            rc.WeightedCluster.ClusterWeight(name=b.service, weight=uint32(b.weight)) for b in item.backends]))
    if item.rewrite_prefix is not None:
        result.prefix_rewrite = item.rewrite_prefix
    if item.timeout is not None:
        result.timeout.CopyFrom(duration(item.timeout))
    if item.retries is not None:
        result.retry_policy.CopyFrom(retry_policy(item.retries))
    result.hash_policy.extend(hash_policy(key) for key in item.hash_on)
    result.request_mirror_policies.extend(mirror_policy(m) for m in item.mirrors)
    if item.websocket:
        result.upgrade_configs.extend(route_upgrades())
    return result


def redirect_action(redirect: Redirect) -> rc.RedirectAction:
    result = rc.RedirectAction(response_code=_REDIRECT_CODES[redirect.code], strip_query=redirect.strip_query)
    if redirect.https:
        result.https_redirect = True
    if redirect.host is not None:
        result.host_redirect = redirect.host
    if redirect.port is not None:
        result.port_redirect = redirect.port
    if redirect.path is not None:
        result.path_redirect = redirect.path
    elif redirect.prefix_rewrite is not None:
        result.prefix_rewrite = redirect.prefix_rewrite
    return result


def direct_response_action(answer: DirectResponse) -> rc.DirectResponseAction:
    result = rc.DirectResponseAction(status=answer.status)
    if answer.body is not None:
        result.body.inline_string = answer.body
    return result


def retry_policy(retries: Retries) -> rc.RetryPolicy:
    result = rc.RetryPolicy(
        retry_on=",".join(retries.on),
        num_retries=uint32(retries.attempts),
        retry_back_off=rc.RetryPolicy.RetryBackOff(
            base_interval=duration(retries.backoff_base), max_interval=duration(retries.backoff_max)),
        # A retry goes to another host, and to the next priority (another region) when one is
        # there, so a request caught by a dying local endpoint is saved by the failover region.
        retry_host_predicate=[rc.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()))],
        host_selection_retry_max_attempts=3,
        retry_priority=rc.RetryPolicy.RetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=packed(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1))),
    )
    if retries.per_try_timeout is not None:
        result.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    return result


def header_options(rules: HeaderRules) -> list[base_pb2.HeaderValueOption]:
    # Overwrite, not append: a client must not be able to pre-set a header the gateway adds.
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=_OVERWRITE)
            for k, v in rules.add]
