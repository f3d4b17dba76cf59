"""Listeners' `compression` and routes' `compression: off`: what loads into the model (defaults included),
every refusal as a `FILE:LINE:COL: path: message`, the warning for `off` on a listener that does not
compress, and the JSON Schema agreeing where a schema can say it."""

from __future__ import annotations

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.compression_warnings import compression_warnings
from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

BASE = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10080
{listener}  - name: internal
    address: 127.0.0.1
    port: 10081
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - name: a
    listener: public
    match: {{prefix: /a}}
    service: accounts
{route}  - name: b
    listener: internal
    match: {{prefix: /b}}
    service: accounts
"""


def text(listener: str = "", route: str = "") -> str:
    return BASE.format(listener=f"    compression: {listener}\n" if listener else "",
                       route=f"    compression: {route}\n" if route else "")


def load(listener: str = "", route: str = "") -> model.Config:
    return parse_sources([Source("gateway.yaml", text(listener, route))])


def errors_of(listener: str = "", route: str = "") -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(listener, route)
    return [str(e) for e in caught.value.errors]


def test_an_empty_mapping_takes_every_default() -> None:
    public = load("{}").listener("public")
    assert public.compression == model.Compression()
    assert public.compression.algorithms == ("br", "gzip")
    assert public.compression.min_bytes == 1024
    assert "application/json" in public.compression.content_types
    assert "application/jwk-set+json" in public.compression.content_types
    assert public.compression.source.line == 6
    assert load().listener("public").compression is None


def test_given_fields_replace_the_defaults_in_order() -> None:
    compression = load("{algorithms: [zstd, br, gzip], min_bytes: 256, content_types: [Application/JSON, "
                       "text/plain]}").listener("public").compression
    assert compression is not None
    assert compression.algorithms == ("zstd", "br", "gzip")
    assert compression.min_bytes == 256
    assert compression.content_types == ("application/json", "text/plain")


def test_a_route_turns_compression_off() -> None:
    config = load("{}", route="off")
    assert [r.compression for r in config.routes] == [False, True]


@pytest.mark.parametrize(("listener", "route", "expected"), [
    ("{algorithms: [lz4]}", "", "6:32: listeners[public].compression.algorithms[0]: 'lz4' is not one of zstd, br, "
                                "gzip"),
    ("{algorithms: [brotli]}", "", "6:32: listeners[public].compression.algorithms[0]: write 'br', the "
                                   "Content-Encoding token"),
    ("{algorithms: [deflate]}", "", "listeners[public].compression.algorithms[0]: 'deflate': Envoy has no deflate "
                                    "compressor"),
    ("{algorithms: [gzip, br, gzip]}", "", "6:42: listeners[public].compression.algorithms[2]: algorithm 'gzip' is "
                                           "listed twice (first at gateway.yaml:6:32)"),
    ("{algorithms: []}", "", "listeners[public].compression.algorithms: "),
    ("{min_bytes: 0}", "", "6:30: listeners[public].compression.min_bytes: must be at least 1"),
    ("{min_bytes: 16777217}", "", "listeners[public].compression.min_bytes: must be at most 16777216"),
    ("{content_types: ['text/*']}", "", "listeners[public].compression.content_types[0]: 'text/*': Envoy compares "
                                        "content types exactly, without wildcards"),
    ("{content_types: ['text/html; charset=utf-8']}", "", "write 'text/html'"),
    ("{content_types: [json]}", "", "'json' is not a media type like application/json"),
    ("{content_types: [text/html, TEXT/HTML]}", "", "content_types[1]: content type 'text/html' is listed twice"),
    ("{level: 9}", "", "listeners[public].compression.level: unknown field 'level'"),
    ("", "on", "routes[a].compression: 'on': only `off` is written here"),
    ("", "{algorithms: [gzip]}", "routes[a].compression: expected a string"),
])
def test_refusals_point_at_the_field(listener: str, route: str, expected: str) -> None:
    found = errors_of(listener, route)
    assert len(found) == 1, found
    assert found[0].startswith("gateway.yaml:")
    assert expected in found[0], found


def test_a_redirect_to_https_listener_has_no_compression() -> None:
    source = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10443
    tls: {certificate: /nonexistent.pem, key: /nonexistent-key.pem}
  - name: plain
    address: 127.0.0.1
    port: 10080
    redirect_to_https: public
    compression: {}
"""
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("gateway.yaml", source)])
    found = [str(e) for e in caught.value.errors if "compression" in str(e)]
    assert found == ["gateway.yaml:11:18: listeners[plain].compression: a redirect_to_https listener answers every "
                     "request with a bodiless 301: put compression on the https listener"]


def test_off_on_a_listener_without_compression_loads_and_warns() -> None:
    config = load(route="off")
    assert [r.compression for r in config.routes] == [False, True]
    (line,) = compression_warnings(config)
    assert line.startswith("gateway.yaml:13:5: ")
    assert "warning: route a says `compression: off`, but listener public does not compress" in line
    assert compression_warnings(load("{}", route="off")) == []
    assert compression_warnings(load("{}")) == []


@pytest.mark.parametrize(("listener", "route", "valid"), [
    ("{}", "off", True),
    ("{algorithms: [zstd, br, gzip], min_bytes: 1, content_types: [application/json]}", "", True),
    ("{algorithms: [lz4]}", "", False),
    ("{min_bytes: 0}", "", False),
    ("{content_types: ['application/json; charset=utf-8']}", "", False),
    ("", "on", False),
])
def test_the_editor_schema_agrees(listener: str, route: str, valid: bool) -> None:
    document = YAML(typ="safe", pure=True).load(text(listener, route))
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(document))
    assert (not errors) == valid, errors
