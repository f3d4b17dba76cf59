"""The route YAML as JSON Schema (draft 2020-12), rendered from `spec.ROOT`, for editors.

The schema checks the shape of one file; `pavilion validate` checks that and everything a schema
cannot say (references between files, duplicate names, weights that add to 100, what Envoy rejects).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ruamel.yaml import YAML

from controlplane.config.kinds import Custom, Either, Field, Kind, ListOf, MapOf, Object, Value
from controlplane.config.spec import ROOT

__all__ = ["json_schema", "print_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    schema = {"$schema": DIALECT, "title": "Pavilion route YAML"}
    schema.update(_kind(ROOT))
    return schema


def print_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def _kind(kind: Kind) -> dict[str, Any]:
    if isinstance(kind, Object):
        return _object(kind)
    if isinstance(kind, ListOf):
        result: dict[str, Any] = {"type": "array", "items": _kind(kind.item)}
        if kind.min_items:
            result["minItems"] = kind.min_items
        return result
    if isinstance(kind, MapOf):
        return {"type": "object", "propertyNames": _value(kind.key), "additionalProperties": _kind(kind.value)}
    if isinstance(kind, Either):
        return {"oneOf": [_kind(option) for option in kind.options]}
    if isinstance(kind, Custom):
        return dict(kind.schema)
    return _value(kind)


def _value(kind: Value) -> dict[str, Any]:
    result: dict[str, Any] = {"type": kind.type}
    if kind.minimum is not None:
        result["minimum"] = kind.minimum
    if kind.maximum is not None:
        result["maximum"] = kind.maximum
    if kind.choices:
        result["enum"] = list(kind.choices)
    if kind.pattern is not None:
        result["pattern"] = kind.pattern
    result.update(kind.schema)
    return result


def _object(kind: Object) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "object",
        "description": kind.doc,
        "properties": {f.name: _field(f) for f in kind.fields},
        "additionalProperties": False,
    }
    required = [f.name for f in kind.fields if f.required]
    if required:
        result["required"] = required
    groups = [{"oneOf": [{"required": [name]} for name in group]} for group in kind.exactly_one]
    if kind.at_least_one:
        groups.append({"anyOf": [{"required": [name]} for name in kind.at_least_one]})
    if len(groups) == 1:
        result.update(groups[0])
    elif groups:
        result["allOf"] = groups
    return result


def _field(field: Field) -> dict[str, Any]:
    result = _kind(field.kind)
    result["description"] = field.doc
    if field.default is not None:
        result["default"] = YAML(typ="safe", pure=True).load(field.default)
    return result
