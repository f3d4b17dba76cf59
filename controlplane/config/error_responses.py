"""The top-level `error_responses:` of the merged directory: how the replies Envoy makes itself are written.

Absent (or `format: envoy`): Envoy's own bodies ("no healthy upstream", an empty 404, ...), as before the
section existed. `format: problem_json`: RFC 9457 problem details, written by Envoy's local reply mappers
(controlplane/translate/_error_responses.py).
"""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.sections import given_once
from controlplane.config.shape import Fields
from pavilion.errors import ConfigError

__all__ = ["ERROR_FORMATS", "read_error_responses"]

ERROR_FORMATS = ("envoy", "problem_json")


def read_error_responses(roots: list[Fields], errors: list[ConfigError]) -> model.ErrorResponses | None:
    """`error_responses:` if one file gives it whole with a format other than Envoy's own, else None."""
    f: Fields | None = given_once(roots, "error_responses", errors)
    if f is None or not f.complete or f.get("format") == "envoy":
        return None
    return model.ErrorResponses(f.get("format"))
