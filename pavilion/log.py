"""structlog set-up: one JSON object per line, with secrets and personal data redacted.

The redaction processor runs last before rendering, on every event, so no call site has to remember
it: values under secret-looking keys, bearer credentials, anything shaped like a JWT, and e-mail
addresses never reach a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

# Keys whose values are secret whatever they look like. Matched on the lower-cased key, as a substring.
_SECRET_KEYS = ("token", "authorization", "cookie", "password", "secret", "jwt", "credential", "api_key",
                "apikey", "private_key", "session")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEYS)


def redact_text(text: str) -> str:
    """`text` with credentials and e-mail addresses replaced by a marker."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    return _EMAIL.sub(REDACTED, text)


def redact_url(url: str) -> str:
    """`url` as an error or log may show it: the password of its userinfo, and the value of every query
    parameter named like a secret (`sentinel_password=`), replaced by ***; the rest as written."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, question, query = rest.partition("?")  # first: a password in the query may hold an "@"
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        credentials = f"{credentials.split(':', 1)[0]}:***"
    if query:
        query = "&".join(f"{name}=***" if is_secret_key(name) else f"{name}{eq}{value}"
                         for name, eq, value in (part.partition("=") for part in query.split("&")))
    return f"{scheme}{sep}{credentials}{at}{location}{question}{query}"


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact_value(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if is_secret_key(key) else redact_value(value)
    return event_dict


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the moment of writing, not at configuration time, so a
    replaced stderr (a test runner's capture that is later closed) never leaves loggers pointing at it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Route structlog and the standard library's logging through one redacting renderer."""
    stream = stream or _CurrentStderr()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_processor, renderer],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
