"""Header and query conditions → HeaderMatcher and QueryParameterMatcher; their place in the precedence."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.config.model import HeaderMatch, Match
from tests.controlplane.translate.test_routes import order, plain, single


def matchers(match: Match) -> rc.RouteMatch:
    return single(plain(match=match)).match


def test_header_conditions() -> None:
    found = matchers(Match(prefix="/", headers=(
        HeaderMatch("a", "blue"), HeaderMatch("b", "", "present"), HeaderMatch("c", "", "absent"),
        HeaderMatch("d", "mobile-", "prefix"), HeaderMatch("e", ".pdf", "suffix"),
        HeaderMatch("f", "json", "contains"), HeaderMatch("g", "v[0-9]+", "regex")))).headers
    a, b, c, d, e, f, g = found
    assert (a.name, a.string_match.exact, a.invert_match) == ("a", "blue", False)
    assert (b.name, b.present_match, b.invert_match) == ("b", True, False)
    # Absent: present, inverted (one spelling every Envoy since v3 reads the same way).
    assert (c.name, c.present_match, c.invert_match) == ("c", True, True)
    assert d.string_match.prefix == "mobile-" and e.string_match.suffix == ".pdf"
    assert f.string_match.contains == "json"
    assert g.string_match.safe_regex.regex == "v[0-9]+"
    assert not any(m.string_match.ignore_case for m in found)


def test_an_empty_exact_value_is_an_exact_match() -> None:
    (header,) = matchers(Match(prefix="/", headers=(HeaderMatch("a", ""),))).headers
    assert header.HasField("string_match") and header.string_match.WhichOneof("match_pattern") == "exact"


def test_query_conditions() -> None:
    found = matchers(Match(prefix="/", query=(
        HeaderMatch("view", "full"), HeaderMatch("debug", "", "present"), HeaderMatch("id", "[0-9]+", "regex"),
        HeaderMatch("lang", "en", "prefix"), HeaderMatch("f", ".pdf", "suffix"),
        HeaderMatch("q", "x", "contains")))).query_parameters
    view, debug, number, lang, suffix, contains = found
    assert (view.name, view.string_match.exact) == ("view", "full")
    assert (debug.name, debug.present_match) == ("debug", True)
    assert number.string_match.safe_regex.regex == "[0-9]+"
    assert lang.string_match.prefix == "en"
    assert suffix.string_match.suffix == ".pdf" and contains.string_match.contains == "x"


def test_methods_follow_the_header_conditions() -> None:
    found = matchers(Match(prefix="/", headers=(HeaderMatch("b", "", "absent"),), methods=("GET",))).headers
    assert [h.name for h in found] == ["b", ":method"]


def test_more_header_conditions_then_more_query_conditions_first() -> None:
    routes = [
        plain("plain", Match(prefix="/v1")),
        plain("one-query", Match(prefix="/v1", query=(HeaderMatch("a", "1"),))),
        plain("two-queries", Match(prefix="/v1", query=(HeaderMatch("a", "1"), HeaderMatch("b", "", "present")))),
        plain("one-header", Match(prefix="/v1", headers=(HeaderMatch("h", "", "absent"),))),
        plain("header-and-query", Match(prefix="/v1", headers=(HeaderMatch("h", "x", "prefix"),),
                                        query=(HeaderMatch("a", "1"),))),
        plain("method", Match(prefix="/v1", methods=("GET",))),
        plain("longer", Match(prefix="/v1/x")),
    ]
    expected = ["longer", "method", "header-and-query", "one-header", "two-queries", "one-query", "plain"]
    assert order(*routes) == expected
    assert order(*reversed(routes)) == expected
