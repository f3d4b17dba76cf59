"""`match.headers` and `match.query` conditions: the exact-value spelling still loads, each condition
form loads into the model, and what Envoy would refuse or cannot do is refused with file:line."""

from __future__ import annotations

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

BASE = """regions: [eu-west]
listeners:
  - {name: public, address: 127.0.0.1, port: 10080}
services:
  - {name: a, endpoints: [{address: 127.0.0.1:9001, region: eu-west}]}
routes:
"""


def load(routes: str) -> model.Config:
    return parse_sources([Source("gateway.yaml", BASE + routes)])


def match_of(match: str) -> model.Match:
    (route,) = load(f"  - {{name: r, service: a, match: {match}}}\n").routes
    return route.match


def errors_of(match: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(f"  - name: r\n    service: a\n    match: {match}\n")
    return [str(e).split(": ", 1)[1] for e in caught.value.errors]


def schema_errors(match: str) -> list[str]:
    document = YAML(typ="safe", pure=True).load(f"{BASE}  - name: r\n    service: a\n    match: {match}\n")
    return [e.message for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(document)]


def test_exact_values_keep_their_spelling_and_meaning() -> None:
    assert match_of("{prefix: /, headers: {X-Team: blue, x-empty: ''}}").headers == (
        model.HeaderMatch("x-team", "blue"), model.HeaderMatch("x-empty", ""))


def test_every_header_condition_form() -> None:
    found = match_of("""{prefix: /, headers: {a: {present: true}, b: {present: false}, c: {prefix: mobile-},
      d: {suffix: .pdf}, e: {contains: json}, f: {regex: "v[0-9]+"}}}""").headers
    assert found == (
        model.HeaderMatch("a", "", "present"), model.HeaderMatch("b", "", "absent"),
        model.HeaderMatch("c", "mobile-", "prefix"), model.HeaderMatch("d", ".pdf", "suffix"),
        model.HeaderMatch("e", "json", "contains"), model.HeaderMatch("f", "v[0-9]+", "regex"))


def test_query_conditions_keep_the_name_as_written() -> None:
    found = match_of("{prefix: /, query: {View: full, debug: {present: true}, id: {regex: '[0-9]+'}, "
                     "lang: {prefix: en}, f: {suffix: .pdf}, q: {contains: x}}}")
    assert found.query == (
        model.HeaderMatch("View", "full"), model.HeaderMatch("debug", "", "present"),
        model.HeaderMatch("id", "[0-9]+", "regex"), model.HeaderMatch("lang", "en", "prefix"),
        model.HeaderMatch("f", ".pdf", "suffix"), model.HeaderMatch("q", "x", "contains"))
    assert found.headers == ()


def test_routes_differing_only_by_a_query_condition_are_not_shadowed() -> None:
    config = load("""  - {name: full, service: a, match: {prefix: /, query: {view: full}}}
  - {name: present, service: a, match: {prefix: /, query: {view: {present: true}}}}
  - {name: header, service: a, match: {prefix: /, headers: {view: {present: true}}}}
  - {name: plain, service: a, match: {prefix: /}}
""")
    assert len(config.routes) == 4


def test_the_same_conditions_twice_are_shadowed() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load("""  - {name: one, service: a, match: {prefix: /, query: {view: {prefix: f}}}}
  - {name: two, service: a, match: {prefix: /, query: {view: {prefix: f}}}}
""")
    (error,) = caught.value.errors
    assert "has the same listener, hosts and match" in str(error)


@pytest.mark.parametrize(("match", "message"), [
    ("{prefix: /, query: {debug: {present: false}}}",
     "routes[r].match.query.debug.present: Envoy cannot require a query parameter to be absent"),
    ("{prefix: /, headers: {x: {prefix: ''}}}",
     "routes[r].match.headers.x.prefix: an empty text matches every value; write `present: true` instead"),
    ("{prefix: /, query: {x: {suffix: ''}}}", "routes[r].match.query.x.suffix: an empty text matches every value"),
    ("{prefix: /, headers: {x: {contains: ''}}}", "routes[r].match.headers.x.contains: an empty text"),
    ("{prefix: /, headers: {x: {regex: '(a'}}}",
     "routes[r].match.headers.x.regex: regex does not compile in RE2 (Envoy's engine): missing ): (a"),
    ("{prefix: /, query: {x: {regex: '(?=a)'}}}",
     "routes[r].match.query.x.regex: Envoy's regex engine (RE2) does not support lookahead"),
    ("{prefix: /, headers: {x: {present: true, regex: a}}}",
     "routes[r].match.headers.x: give only one of present, prefix, suffix, contains or regex (found present and "
     "regex)"),
    ("{prefix: /, headers: {x: {}}}", "routes[r].match.headers.x: give one of present, prefix, suffix, contains or "
                                      "regex"),
    ("{prefix: /, headers: {x: [a]}}", "routes[r].match.headers.x: expected a value, or a mapping with one of "
                                       "present, prefix, suffix, contains or regex, got a list"),
    ("{prefix: /, query: {'a b': c}}", "routes[r].match.query.a b: 'a b' holds a space, '&', '=', '#'"),
    ("{prefix: /, query: {v: {prefix: \"a\\nb\"}}}", "routes[r].match.query.v.prefix: header value holds a control"),
])
def test_refusals(match: str, message: str) -> None:
    errors = errors_of(match)
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_an_exact_condition_is_written_as_the_value_alone() -> None:
    assert errors_of("{prefix: /, headers: {x: {exact: a}}}") == [
        "routes[r].match.headers.x: give one of present, prefix, suffix, contains or regex",
        "routes[r].match.headers.x.exact: unknown field 'exact'"]


def test_the_schema_agrees_on_the_shape() -> None:
    assert schema_errors("{prefix: /, headers: {a: b, c: {present: false}}, query: {d: {regex: x}}}") == []
    assert schema_errors("{prefix: /, query: {d: {present: false}}}")
    assert schema_errors("{prefix: /, headers: {d: {prefix: ''}}}")
    assert schema_errors("{prefix: /, headers: {d: {prefix: a, suffix: b}}}")
    assert schema_errors("{prefix: /, query: {'': a}}")
