"""A small vocabulary to declare the route YAML's shape once.

`spec.py` declares the route YAML with these kinds; `shape.py` checks YAML nodes against them and
`schema.py` renders them as JSON Schema, so the loader and the editor schema cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

# A conversion after the type check: returns the value to keep or raises ValueError(message for a user).
Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Value:
    """A scalar: string, integer or boolean, with optional bounds, choices and pattern."""

    type: Literal["string", "integer", "boolean"]
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # a regex both `re` and ECMA-262 read the same way
    pattern_hint: str = ""  # what to tell a user whose value misses the pattern
    convert: Convert | None = None
    expected: str = ""  # what to call the value in a type error, when "a string" says too little
    schema: dict[str, Any] = field(default_factory=dict, compare=False)  # JSON Schema extras

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern) if self.pattern is not None else None)

    def matches(self, text: str) -> bool:
        """Whether `text` fits the pattern (always, without one)."""
        compiled: re.Pattern[str] | None = self.__dict__["_compiled"]
        return compiled is None or compiled.search(text) is not None


@dataclass(frozen=True)
class ListOf:
    item: Kind
    min_items: int = 0


@dataclass(frozen=True)
class MapOf:
    """A mapping of free keys (header names, claim names) to values."""

    key: Value
    value: Value | ListOf | Object | Either
    key_title: str = "header name"  # what the docs call a key


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str
    required: bool = False
    default: str | None = None  # as a user would write it, for the docs and the schema


@dataclass(frozen=True)
class Object:
    title: str
    doc: str
    fields: tuple[Field, ...]
    exactly_one: tuple[tuple[str, ...], ...] = ()  # groups of fields of which exactly one must be given
    at_least_one: tuple[str, ...] = ()  # fields of which one or more must be given
    none_given: str = ""  # what to tell a user who gave none of `at_least_one`

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    def field(self, name: str) -> Field | None:
        by_name: dict[str, Field] = self.__dict__["_by_name"]
        return by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class Either:
    """One of several kinds, chosen by the YAML node's form: a scalar, a list or a mapping.

    `auth: none` or `auth: {tenants: [a]}`; `per: tenant` or `per: [tenant, subject]`. At most one
    option per form, so the node alone says which applies.
    """

    options: tuple[Kind, ...]
    title: str  # what to call the whole, in a type error


# Reads a node the kinds cannot describe (a tenant entry, read by extauthz's own parser): returns
# the value to keep, or None after appending its problems to `errors`. Arguments: node, path, errors.
CustomRead = Callable[[Any, str, list[Any]], Any]


@dataclass(frozen=True)
class Custom:
    """A value read by its own function, with its JSON Schema and docs given by hand."""

    title: str
    read: CustomRead = field(compare=False)
    schema: dict[str, Any] = field(default_factory=dict, compare=False)
    label: str = ""  # the field whose value names a list entry in error paths (`tenants[acme]`)
    anchor: str = ""  # the docs section describing it (the field tables link there)


Kind: TypeAlias = Value | ListOf | MapOf | Object | Either | Custom
