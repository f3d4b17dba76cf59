"""A route's `cors`, `redirect` and `direct_response`, and a listener's `redirect_to_https`: the rules
that look at more than one value (origins against credentials, a redirect against the match, a
listener against the one it redirects to)."""

from __future__ import annotations

import re

from controlplane.config import model
from controlplane.config.policy import Problem
from controlplane.config.rules import re2_regex
from controlplane.config.shape import Fields, Got
from pavilion.errors import Location

__all__ = ["ANSWERS", "FORWARD_ONLY", "https_port", "origin_pattern", "read_cors", "read_direct_response",
           "read_redirect"]

# Route fields that make Envoy answer by itself, and those that only apply when a service is called.
ANSWERS = ("redirect", "direct_response")
# Envoy's CORS filter skips a route that does not forward (it has no route entry): `cors` would do nothing.
FORWARD_ONLY = ("rewrite", "timeout", "retries", "rate_limits", "cors", "max_request_body", "fault")


def origin_pattern(origin: str) -> str:
    """The RE2 full match of a `*` or `scheme://*.domain[:port]` origin (one or more labels for `*`)."""
    if origin == "*":
        return ".*"
    scheme, _, rest = origin.partition("://*.")
    return re.escape(f"{scheme}://") + r"([a-z0-9-]+\.)+" + re.escape(rest)


def read_cors(c: Fields, problem: Problem) -> model.Cors | None:
    """The route's CORS policy (`c` its `cors` fields), or None after reporting every problem."""
    origins: list[Got] = c.get("allow_origins", [])
    credentials = bool(c.get("allow_credentials", False))
    ok = c.complete
    seen: dict[str, Location] = {}
    exact: list[str] = []
    patterns: list[str] = []
    for got in origins:
        if got.value in seen:
            problem(f"origin {got.value!r} is listed twice (first at {seen[got.value]})", got.loc, got.path)
            ok = False
            continue
        seen[got.value] = got.loc
        if got.value == "*" and credentials:
            problem("'*' cannot be used with allow_credentials: browsers refuse credentials for any origin "
                    "(Fetch standard); list the origins", got.loc, got.path)
            ok = False
        elif got.value == "*" and len(origins) > 1:
            problem("'*' already allows every origin; list nothing else with it", got.loc, got.path)
            ok = False
        elif "*" in got.value:
            try:
                patterns.append(re2_regex(origin_pattern(got.value)))
            except ValueError as exc:
                problem(f"{got.value!r} is too long a wildcard for Envoy: {exc}", got.loc, got.path)
                ok = False
        else:
            exact.append(got.value)
    lists = {name: _distinct(c, name, problem) for name in ("allow_methods", "allow_headers", "expose_headers")}
    if not ok or any(value is None for value in lists.values()):
        return None
    return model.Cors(
        exact_origins=tuple(exact), origin_patterns=tuple(patterns),
        allow_methods=lists["allow_methods"] or (), allow_headers=lists["allow_headers"] or (),
        expose_headers=lists["expose_headers"] or (), max_age=c.get("max_age"), allow_credentials=credentials)


def _distinct(c: Fields, name: str, problem: Problem) -> tuple[str, ...] | None:
    seen: dict[str, Location] = {}
    for got in c.get(name, []):
        if got.value in seen:
            problem(f"{got.value!r} is listed twice (first at {seen[got.value]})", got.loc, got.path)
            return None
        seen[got.value] = got.loc
    return tuple(seen)


def read_redirect(r: Fields, match: Fields | None, problem: Problem) -> model.Redirect | None:
    ok = r.complete
    if "path" in r and "prefix_rewrite" in r:
        problem("give path or prefix_rewrite, not both: path replaces the whole path", r.at("prefix_rewrite"),
                r.path_of("prefix_rewrite"))
        ok = False
    if "prefix_rewrite" in r and match is not None and "regex" in match:
        problem("prefix_rewrite needs a prefix or path match, not a regex", r.at("prefix_rewrite"),
                r.path_of("prefix_rewrite"))
        ok = False
    if not ok:
        return None
    return model.Redirect(https=r.get("https", False), host=r.get("host"), port=r.get("port"), path=r.get("path"),
                          prefix_rewrite=r.get("prefix_rewrite"), code=r.get("code", 301),
                          strip_query=r.get("strip_query", False))


def read_direct_response(d: Fields) -> model.DirectResponse | None:
    return model.DirectResponse(d.get("status"), d.get("body")) if d.complete else None


def https_port(f: Fields, listeners: dict[str, Fields], problem: Problem) -> tuple[bool, int | None]:
    """(ok, the port `redirect_to_https` sends to): the port of the TLS listener it names."""
    if "redirect_to_https" not in f:
        return "redirect_to_https" not in f.given, None
    name = f.get("redirect_to_https")
    where, path = f.at("redirect_to_https"), f.path_of("redirect_to_https")
    target = listeners.get(name)
    if "tls" in f.given:
        problem("a listener with tls already serves https; redirect_to_https belongs on a plaintext listener",
                where, path)
    elif target is None:
        known = ", ".join(n for n, item in listeners.items() if "tls" in item.given) or "none is defined"
        problem(f"unknown listener {name!r}; listeners with tls: {known}", where, path)
    elif target is f:
        problem("a listener cannot redirect to itself", where, path)
    elif "tls" not in target.given:
        problem(f"listener {name!r} has no tls: redirect_to_https names the listener serving https", where, path)
    elif "port" in target:
        return True, int(target.get("port"))
    return False, None
