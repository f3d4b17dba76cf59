"""YAML text to a small tree of nodes that remember where they were written.

ruamel.yaml composes the node graph (YAML 1.2, so `on:` stays the string "on"); we turn it into
`Mapping`/`Sequence`/`Scalar` with a `Location` each, resolving scalars ourselves so that no YAML 1.1
habit (`yes`, `on`, `010` as octal) can creep back in through a constructor.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.nodes import Node as RuamelNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.resolver import BaseResolver

from pavilion.errors import ConfigError, Location

__all__ = ["Key", "Mapping", "Node", "Scalar", "ScalarValue", "Sequence", "parse_documents"]

ScalarValue: TypeAlias = str | int | float | bool | None


@dataclass(frozen=True)
class Scalar:
    value: ScalarValue
    loc: Location
    # The text as written (quotes removed): what Go's yaml.v2 puts in a string field whatever the
    # scalar would resolve to (`010`, `1.50`, `on`), for formats that must read the same as a Go tool.
    written: str = ""


@dataclass(frozen=True)
class Key:
    text: str
    loc: Location


@dataclass(frozen=True)
class Mapping:
    items: tuple[tuple[Key, Node], ...]  # in written order; duplicates kept so the checker can report them
    loc: Location


@dataclass(frozen=True)
class Sequence:
    items: tuple[Node, ...]
    loc: Location


Node: TypeAlias = Scalar | Mapping | Sequence

_TAG = "tag:yaml.org,2002:"
# Text the two parsers read differently goes to the pure one alone: line breaks of YAML 1.1 only
# (NEL, LS, PS), and tabs, which libyaml accepts in places where ruamel's parser refuses them.
_NOT_FOR_LIBYAML = re.compile("[\t\x85\u2028\u2029]")
try:
    import _ruamel_yaml  # noqa: F401  (ruamel.yaml.clib: libyaml's parser)

    _LIBYAML = True
except ImportError:
    _LIBYAML = False
# The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_NULL = ("", "~", "null", "Null", "NULL")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_SPECIAL_FLOAT = {
    **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")},
    **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
}


def parse_documents(text: str, file: str, *, fast: bool = True) -> tuple[Node, ...]:
    """Every document of `text` (empty documents are skipped); ConfigError for a syntax error.

    With `fast`, libyaml (ruamel.yaml.clib, about five times faster) reads the text when it can; it
    follows YAML 1.1, so whatever it refuses, such as `{address: 127.0.0.1:9001}`, goes to the pure
    YAML 1.2 parser, which also words every syntax error. Scalars are resolved by us either way.
    """
    if fast and _LIBYAML and not _NOT_FOR_LIBYAML.search(text):
        try:
            roots = list(_parser(pure=False).compose_all(text))
        except YAMLError:
            pass
        else:
            return _documents(roots, file)
    try:
        roots = list(_parser(pure=True).compose_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        context = ""
        if exc.context and exc.problem:
            started = exc.context_mark
            since = f" that starts at {started.line + 1}:{started.column + 1}" if started and started != mark else ""
            context = f" ({exc.context}{since})"
        raise ConfigError(f"YAML syntax error: {problem}{context}", location=where) from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(f"YAML syntax error: character {exc.character!r} is not allowed in YAML text",
                          location=Location(file, line, column)) from None
    except YAMLError as exc:
        raise ConfigError(f"YAML syntax error: {exc}", location=Location(file)) from None
    return _documents(roots, file)


class _NoResolver(BaseResolver):
    """Gives every node its kind's default tag. `_scalar_value` resolves scalars (YAML 1.2), and
    ruamel's versioned resolver costs more than libyaml's whole parse (it looks up the version by
    catching an AttributeError per scalar)."""

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(loadumper=loadumper if loadumper is not None else loader)

    @property
    def processing_version(self) -> tuple[int, int]:
        return (1, 2)  # ruamel's pure parser asks: YAML 1.2 parsing rules, whatever a %YAML line says

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is MappingNode:
            return self.DEFAULT_MAPPING_TAG
        return self.DEFAULT_SEQUENCE_TAG if kind is SequenceNode else self.DEFAULT_SCALAR_TAG


def _parser(*, pure: bool) -> YAML:
    yaml = YAML(typ="safe", pure=pure)
    yaml.Resolver = _NoResolver
    return yaml


def _documents(roots: list[RuamelNode | None], file: str) -> tuple[Node, ...]:
    return tuple(_convert(root, file) for root in roots if root is not None and not _is_empty(root))


def _is_empty(node: RuamelNode) -> bool:
    return isinstance(node, ScalarNode) and node.style in (None, "") and node.value in _NULL


def _where(node: RuamelNode, file: str) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node: RuamelNode, file: str) -> Node:
    if isinstance(node, MappingNode):
        return _mapping(node, file)
    if isinstance(node, SequenceNode):
        return Sequence(tuple(_convert(item, file) for item in node.value), _where(node, file))
    if isinstance(node, ScalarNode):
        return Scalar(_scalar_value(node), _where(node, file), node.value)
    raise ConfigError(f"unsupported YAML node {type(node).__name__}", location=_where(node, file))


def _mapping(node: MappingNode, file: str) -> Mapping:
    """A mapping, with `<<: *anchor` merge keys expanded: written keys win, then earlier merges."""
    written: list[tuple[Key, Node]] = []
    merged: dict[str, tuple[Key, Node]] = {}
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.value == "<<" and not key.style:
            for source in value.value if isinstance(value, SequenceNode) else [value]:
                if not isinstance(source, MappingNode):
                    raise ConfigError("a merge key (<<) takes a mapping or a list of mappings",
                                      location=_where(source, file))
                for item in _mapping(source, file).items:
                    merged.setdefault(item[0].text, item)
            continue
        written.append((Key(_key_text(key), _where(key, file)), _convert(value, file)))
    names = {key.text for key, _ in written}
    extra = tuple(item for name, item in merged.items() if name not in names)
    return Mapping(extra + tuple(written), _where(node, file))


def _key_text(node: RuamelNode) -> str:
    # Keys are names, never numbers or booleans: take what was written, whatever it would resolve to.
    return node.value if isinstance(node, ScalarNode) else "<complex key>"


def _scalar_value(node: ScalarNode) -> ScalarValue:
    """Plain scalars resolved by the YAML 1.2 core schema, whichever parser ran; quoted ones are strings."""
    text: str = node.value
    if node.style not in (None, ""):
        return text
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return int(text, 0) if text.startswith(("0o", "0x")) else int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in _SPECIAL_FLOAT:
        return _SPECIAL_FLOAT[text]
    return text


# How errors speak of fields and values, shared by every config loader.

def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """`; did you mean 'x'?` when a choice is close to `word`, else nothing."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


def describe(node: Node) -> str:
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, Sequence):
        return "a list"
    value = node.value
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    return f"a string ({value!r})"
