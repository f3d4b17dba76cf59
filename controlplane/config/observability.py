"""The top-level `access_log:` (and its rules) of the merged directory.

Access logs are on unless a file says `access_log: off`: at the edge, a request nobody can find
afterwards is an incident nobody can explain (Envoy Gateway logs JSON to stdout by default too;
Istio leaves it to the mesh config). What goes in a line is fixed by the translation
(controlplane/translate/_access_log.py) and never holds a header value or the query.
"""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.shape import Fields
from pavilion.errors import ConfigError

__all__ = ["ACCESS_LOG_FORMATS", "log_path", "read_access_log"]

ACCESS_LOG_FORMATS = ("json", "text")


def log_path(text: str) -> str:
    """An absolute path Envoy can open for appending."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path (Envoy runs elsewhere than this YAML)")
    if any(ord(c) < 32 for c in text) or text.endswith("/"):
        raise ValueError(f"{text!r} is not a file path")
    return text


def read_access_log(roots: list[Fields], errors: list[ConfigError]) -> model.AccessLog | None:
    """The access log settings: the default when no file gives `access_log:`, None for `off`."""
    # Either's scalar form (`off`) arrives as a plain string; the mapping form as Fields.
    found = _single_value(roots, errors)
    if found is None:
        return model.AccessLog()
    if isinstance(found, str):
        return None
    if not found.complete:
        return model.AccessLog()
    return model.AccessLog(found.get("format", "json"), found.get("path"), found.get("subject", False))


def _single_value(roots: list[Fields], errors: list[ConfigError]) -> Fields | str | None:
    """The one `access_log:` given (a mapping, or the string `off`); every other is an error."""
    given = [root for root in roots if "access_log" in root.given]
    for other in given[1:]:
        errors.append(ConfigError(f"`access_log` is already given at {given[0].at('access_log')}; give it in one "
                                  "file only", location=other.at("access_log"), path="access_log"))
    if not given:
        return None
    value: Fields | str | None = given[0].get("access_log")
    return value
