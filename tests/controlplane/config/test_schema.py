"""The JSON Schema agrees with the loader: examples pass it, and every bad fixture marked
`schema: reject` fails it while those marked `accept` (rules a schema cannot express) pass."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config.kinds import ListOf, Object
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from controlplane.config.spec import DURATION_PATTERN, ROOT
from pavilion.config_files import Source
from pavilion.durations import parse_duration
from tests.controlplane.config.fixtures_bad import bad_files, schema_verdict

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "gateway"
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def load_yaml(path: Path) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.version = (1, 2)
    return yaml.load(path.read_text(encoding="utf-8"))


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_examples_pass_the_schema(path: Path) -> None:
    VALIDATOR.validate(load_yaml(path))


@pytest.mark.parametrize("path", [p for p in bad_files() if schema_verdict(p) != "none"], ids=lambda p: p.stem)
def test_schema_agrees_with_fixture(path: Path) -> None:
    errors = list(VALIDATOR.iter_errors(load_yaml(path)))
    if schema_verdict(path) == "reject":
        assert errors, f"{path.name}: the loader rejects it, the schema should too"
    else:
        assert schema_verdict(path) == "accept"
        assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("text", ["1s", "250ms", "1.5s", "5m", "24h", "7d", "10us", " 2s ", "0s",
                                  "1", "s", "1 s", "1sec", "-1s", "1.s", ".5s", "1e3ms", "2S"])
def test_duration_pattern_matches_parse_duration(text: str) -> None:
    try:
        parse_duration(text)
        parses = True
    except ValueError:
        parses = False
    assert bool(re.search(DURATION_PATTERN, text)) == parses


def _objects(kind: Object) -> list[Object]:
    found = [kind]
    for f in kind.fields:
        inner = f.kind.item if isinstance(f.kind, ListOf) else f.kind
        if isinstance(inner, Object):
            found += _objects(inner)
    return found


def test_documented_defaults_are_the_model_defaults() -> None:
    """A default in the spec (docs, schema) must be what loading actually yields."""
    config = parse_sources([Source("a.yaml", """
regions: [r]
listeners: [{name: l, address: 127.0.0.1, port: 1}]
services:
  - name: s
    endpoints: [{address: 127.0.0.1:2, region: r}]
    health_check: {path: /, interval: 1s}
    circuit_breaker: {}
    outlier_detection: {}
routes: [{name: x, match: {prefix: /}, service: s, retries: {attempts: 1}}]
""")])
    service, route = config.services[0], config.routes[0]
    assert route.retries is not None
    loaded = {
        "endpoint": service.endpoints[0], "health_check": service.health_check, "service": service,
        "circuit_breaker": service.circuit_breaker, "outlier_detection": service.outlier_detection,
        "retries": route.retries, "route": route,
    }
    checked = 0
    for kind in _objects(ROOT):
        item = loaded.get(kind.title)
        for f in kind.fields:
            if f.default is None or item is None or f.name == "backoff":  # backoff: checked below
                continue
            default = YAML(typ="safe", pure=True).load(f.default)
            value = getattr(item, f.name)
            if isinstance(default, str) and isinstance(value, float):
                default = parse_duration(default)
            elif isinstance(default, list):
                default = tuple(default)
            assert value == default, f"{kind.title}.{f.name}"
            checked += 1
    assert route.retries.backoff_base == 0.025 and route.retries.backoff_max == 0.25
    assert route.hosts == ("*",)
    assert checked >= 12
