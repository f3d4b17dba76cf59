"""A route's header and query conditions → Envoy HeaderMatcher and QueryParameterMatcher.

`present: false` (the header must not be sent) is a present match inverted. Query conditions have no
absent form: Envoy's QueryParameterMatcher cannot invert, and the loader refuses it.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.config.model import HeaderMatch

__all__ = ["header_matcher", "query_matcher"]


def header_matcher(condition: HeaderMatch) -> rc.HeaderMatcher:
    if condition.how == "present":
        return rc.HeaderMatcher(name=condition.name, present_match=True)
    if condition.how == "absent":
        return rc.HeaderMatcher(name=condition.name, present_match=True, invert_match=True)
    return rc.HeaderMatcher(name=condition.name, string_match=_string_matcher(condition))


def query_matcher(condition: HeaderMatch) -> rc.QueryParameterMatcher:
    if condition.how == "present":
        return rc.QueryParameterMatcher(name=condition.name, present_match=True)
    return rc.QueryParameterMatcher(name=condition.name, string_match=_string_matcher(condition))


def _string_matcher(condition: HeaderMatch) -> string_pb2.StringMatcher:
    if condition.how == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=condition.value))
    if condition.how in ("prefix", "suffix", "contains"):
        return string_pb2.StringMatcher(**{condition.how: condition.value})
    return string_pb2.StringMatcher(exact=condition.value)
