"""A route's `match` as the model keeps it: the path condition, and each header and query condition,
written either as an exact value or as `{present | prefix | suffix | contains | regex}`."""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.shape import Fields, Got

__all__ = ["read_match"]

_TEXT_FORMS = ("prefix", "suffix", "contains", "regex")


def read_match(m: Fields) -> model.Match:
    """The model of a complete `match` mapping."""
    return model.Match(m.get("prefix"), m.get("path"), m.get("regex"), _conditions(m, "headers"),
                       tuple(g.value for g in m.get("methods", [])), _conditions(m, "query"))


def _conditions(m: Fields, name: str) -> tuple[model.HeaderMatch, ...]:
    items: dict[str, Got] = m.get(name) or {}
    return tuple(_condition(key, got.value) for key, got in items.items())


def _condition(name: str, value: str | Fields) -> model.HeaderMatch:
    if isinstance(value, str):
        return model.HeaderMatch(name, value)
    if "present" in value:
        return model.HeaderMatch(name, "", "present" if value.get("present") else "absent")
    form = next(form for form in _TEXT_FORMS if form in value)
    return model.HeaderMatch(name, value.get(form), form)
