"""Check YAML nodes against the declared kinds: unknown and missing fields, types, bounds, choices,
patterns and conversions. Every problem is collected, none stops the walk; what passed is handed
on as `Got`/`Fields` with the location and field path of each value, for the rules that follow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controlplane.config.kinds import Custom, Either, Field, Kind, ListOf, MapOf, Object, Value
from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import Mapping, Node, Scalar, Sequence, describe, join, suggest


@dataclass(frozen=True)
class Got:
    """A value that passed its checks: a Python value, a `Fields`, or a list of `Got`."""

    value: Any
    loc: Location
    path: str


class Fields:
    """The fields of one mapping that passed their checks, each with where it was written."""

    def __init__(self, kind: Object, got: dict[str, Got], loc: Location, path: str, complete: bool,
                 given: frozenset[str] = frozenset()) -> None:
        self.kind = kind
        self.given = given  # fields written, valid or not
        self.got = got
        self.loc = loc
        self.path = path
        self.complete = complete  # no problem anywhere inside: safe to build a model object from

    def __contains__(self, name: str) -> bool:
        return name in self.got

    def get(self, name: str, default: Any = None) -> Any:
        item = self.got.get(name)
        return default if item is None else item.value

    def at(self, name: str) -> Location:
        item = self.got.get(name)
        return self.loc if item is None else item.loc

    def path_of(self, name: str) -> str:
        return join(self.path, name)


_LABEL = re.compile(r"[A-Za-z0-9_.-]+")
_EXPECTED = {"string": "a string", "integer": "an integer", "boolean": "a boolean (true or false)"}


class Shape:
    """Walks nodes against kinds; `errors` collects every problem found."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def problem(self, message: str, loc: Location, path: str) -> None:
        self.errors.append(ConfigError(message, location=loc, path=path))

    def read(self, node: Node, kind: Kind, path: str) -> Got | None:
        if isinstance(kind, Object):
            return self._object(node, kind, path)
        if isinstance(kind, ListOf):
            return self._list(node, kind, path)
        if isinstance(kind, MapOf):
            return self._map(node, kind, path)
        if isinstance(kind, Either):
            return self._either(node, kind, path)
        if isinstance(kind, Custom):
            value = kind.read(node, path, self.errors)
            return None if value is None else Got(value, node.loc, path)
        return self._value(node, kind, path)

    def _either(self, node: Node, kind: Either, path: str) -> Got | None:
        for option in kind.options:
            if _form_fits(node, option):
                return self.read(node, option, path)
        self.problem(f"expected {kind.title}, got {describe(node)}", node.loc, path)
        return None

    def _object(self, node: Node, kind: Object, path: str) -> Got | None:
        if not isinstance(node, Mapping):
            self.problem(f"expected a mapping ({kind.title}), got {describe(node)}", node.loc, path)
            return None
        got: dict[str, Got] = {}
        complete = True
        errors_before = len(self.errors)
        seen: dict[str, Location] = {}
        for key, value in node.items:
            name = key.text
            spec = kind.field(name)
            if spec is None:
                self.problem(f"unknown field {name!r}{suggest(name, kind.names)}", key.loc, join(path, name))
                continue
            if name in seen:
                self.problem(f"field {name!r} is given twice (first at {seen[name]})", key.loc, join(path, name))
                continue
            seen[name] = key.loc
            item = self.read(value, spec.kind, join(path, name))
            if item is not None:
                got[name] = item
            elif spec.required:
                complete = False
        for spec in kind.fields:
            if spec.required and spec.name not in seen:
                self.problem(f"required field {spec.name!r} is missing", node.loc, join(path, spec.name))
                complete = False
        complete = self._exactly_one(kind, node, seen, path) and complete
        complete = self._at_least_one(kind, node, seen, path) and complete and len(self.errors) == errors_before
        return Got(Fields(kind, got, node.loc, path, complete, frozenset(seen)), node.loc, path)

    def _exactly_one(self, kind: Object, node: Mapping, seen: dict[str, Location], path: str) -> bool:
        ok = True
        for group in kind.exactly_one:
            given = [name for name in group if name in seen]
            if len(given) == 1:
                continue
            ok = False
            choices = ", ".join(group[:-1]) + f" or {group[-1]}"
            if given:
                where = seen[given[1]]
                self.problem(f"give only one of {choices} (found {' and '.join(given)})", where, path)
            else:
                self.problem(f"give one of {choices}", node.loc, path)
        return ok

    def _at_least_one(self, kind: Object, node: Mapping, seen: dict[str, Location], path: str) -> bool:
        group = kind.at_least_one
        if not group or any(name in seen for name in group):
            return True
        hint = f"; {kind.none_given}" if kind.none_given else ""
        self.problem(f"give at least one of {', '.join(group[:-1])} or {group[-1]}{hint}", node.loc, path)
        return False

    def _list(self, node: Node, kind: ListOf, path: str) -> Got | None:
        if not isinstance(node, Sequence):
            self.problem(f"expected a list, got {describe(node)}", node.loc, path)
            return None
        if len(node.items) < kind.min_items:
            self.problem(f"needs at least {kind.min_items} item{'s' if kind.min_items > 1 else ''}", node.loc, path)
        items: list[Got] = []
        for index, item in enumerate(node.items):
            got = self.read(item, kind.item, f"{path}[{_label(item, kind.item, index)}]")
            if got is not None:
                items.append(got)
        return Got(items, node.loc, path)

    def _map(self, node: Node, kind: MapOf, path: str) -> Got | None:
        if not isinstance(node, Mapping):
            self.problem(f"expected a mapping, got {describe(node)}", node.loc, path)
            return None
        items: dict[str, Got] = {}
        seen: dict[str, Location] = {}  # by the key as kept (header names in lower case)
        for key, value in node.items:
            where = _key_path(path, key.text)
            name = self._value(Scalar(key.text, key.loc), kind.key, where)
            if name is not None and name.value in seen:
                self.problem(f"{key.text!r} is given twice (first at {seen[name.value]})", key.loc, where)
                continue
            got = self.read(value, kind.value, where)
            if name is not None:
                seen[name.value] = key.loc
                if got is not None:
                    items[name.value] = got
        return Got(items, node.loc, path)

    def _value(self, node: Node, kind: Value, path: str) -> Got | None:
        value = node.value if isinstance(node, Scalar) else None
        if not isinstance(node, Scalar) or not _has_type(value, kind.type):
            self.problem(f"expected {kind.expected or _EXPECTED[kind.type]}, got {describe(node)}", node.loc, path)
            return None
        message = _check(value, kind)
        if message is None and kind.convert is not None:
            try:
                value = kind.convert(value)
            except ValueError as exc:
                message = str(exc)
        if message is not None:
            self.problem(message, node.loc, path)
            return None
        return Got(value, node.loc, path)


def _key_path(path: str, key: str) -> str:
    """`headers.x-user`, or `claims['ro\\tle']` for a key that would not read well (empty, control characters)."""
    return join(path, key) if key and key.isprintable() else f"{path}[{key!r}]"


def _form_fits(node: Node, kind: Kind) -> bool:
    if isinstance(kind, Object | MapOf):
        return isinstance(node, Mapping)
    if isinstance(kind, ListOf):
        return isinstance(node, Sequence)
    return isinstance(node, Scalar)


def _has_type(value: Any, type_name: str) -> bool:
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str)


def _check(value: Any, kind: Value) -> str | None:
    if kind.minimum is not None and value < kind.minimum:
        return f"must be at least {kind.minimum}" + (f" and at most {kind.maximum}" if kind.maximum else "")
    if kind.maximum is not None and value > kind.maximum:
        return f"must be at most {kind.maximum}"
    if kind.choices and value not in kind.choices:
        return f"{value!r} is not one of {', '.join(kind.choices)}{suggest(value, kind.choices)}"
    if not kind.matches(value):
        return kind.pattern_hint or f"{value!r} does not match {kind.pattern}"
    return None


def _label(node: Node, kind: Kind, index: int) -> str:
    """An entry's name where it has a usable one (`routes[accounts]`), else its 0-based index."""
    label = "name" if isinstance(kind, Object) and kind.field("name") is not None else ""
    label = kind.label if isinstance(kind, Custom) else label
    if label and isinstance(node, Mapping):
        for key, value in node.items:
            text = value.value if isinstance(value, Scalar) else None
            if key.text == label and isinstance(text, str) and _LABEL.fullmatch(text):
                return text
    return str(index)


__all__ = ["Field", "Fields", "Got", "Shape", "describe", "join", "suggest"]
