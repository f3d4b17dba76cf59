"""Config versions: a short hash of a config's content, the same on every machine and replica.

The control plane versions the route YAML with it; ext_authz and ratelimit version a config they
read from their own file with it. Blind to fields that take no part in equality (`source`: file
and line), so moving an entry between files changes no version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = ["HASH_CHARS", "config_version"]

HASH_CHARS = 16  # 64 bits of sha256: collisions are not a concern at gateway scale


def config_version(config: Any) -> str:
    """A hash of the config's content (dataclasses, tuples, lists, mappings and plain values)."""
    return hashlib.sha256(repr(_canonical(config)).encode()).hexdigest()[:HASH_CHARS]


_COMPARED: dict[type, tuple[str, ...]] = {}


def _canonical(value: Any) -> Any:
    kind = type(value)
    names = _COMPARED.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _COMPARED[kind] = tuple(f.name for f in dataclasses.fields(value) if f.compare)
    if names is not None:
        return (kind.__name__, *(_canonical(getattr(value, name)) for name in names))
    if kind is tuple or kind is list:
        return tuple(_canonical(item) for item in value)
    if isinstance(value, Mapping):
        return tuple(sorted((repr(key), _canonical(item)) for key, item in value.items()))
    return value
