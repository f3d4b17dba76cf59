"""Checks of single values that Envoy would reject or misread. Each raises ValueError with a
message for the person who wrote the value, or returns the value in the form the model keeps."""

from __future__ import annotations

import ipaddress
import re

import re2

from extauthz.config import RESERVED_HEADERS
from pavilion.durations import parse_duration

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

# Envoy's retry_on values (router filter, x-envoy-retry-on and x-envoy-retry-grpc-on).
RETRY_ON = (
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
)

PROTOCOLS = ("http1", "http2", "grpc")
# The characters that are not themselves in an RE2 regex: where a regex's literal start ends.
REGEX_SPECIAL = frozenset(".[](){}*+?^$|\\")
# A service's `load_balancing`: Envoy's lb_policy; the last two pick a host by a hash of the request (`hash_on`).
LOAD_BALANCING = ("round_robin", "least_request", "random", "ring_hash", "maglev")
HASH_BALANCING = ("ring_hash", "maglev")
# Facts a route's rate limit counts per, in the order their descriptor entries are sent.
RATE_LIMIT_FACTS = ("tenant", "client", "subject", "client_ip")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_HINT = "a name starts with a letter or digit and holds only letters, digits, '.', '_' and '-'"

_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Envoy rejects a regex whose RE2 program is larger (runtime re2.max_program_size.error_level).
ENVOY_MAX_PROGRAM_SIZE = 100
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print every rejected pattern on stderr

# Python-only constructs RE2 rejects, named so the error says what to change.
_NOT_RE2 = (
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "a backreference (\\1...)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\(\?P=\w+\)"), "a named backreference (?P=name)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\k<"), "a named backreference \\k<name>"),
    (re.compile(r"(?<!\\)(?:\\\\)*\(\?<?[=!]"), "lookahead or lookbehind ((?=, (?!, (?<=, (?<!)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\(\?>"), "an atomic group (?>...)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\(\?\("), "a conditional (?(...)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\Z"), "\\Z (write $ or \\z)"),
)


def duration(text: str) -> float:
    return parse_duration(text)


def positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return seconds


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address to bind a listener on (Envoy does not resolve names for listeners)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address; a listener binds an IPv4 or IPv6 address") from None


def host_port(text: str) -> tuple[str, int]:
    """`ipv4:port` or `[ipv6]:port`, port 1-65535. Names are parsed but refused: endpoints go to Envoy
    over EDS, which takes addresses only (a DNS cluster type would be needed for names)."""
    hint = "write ip:port, like 127.0.0.1:9001 or [::1]:9001"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not an address; {hint}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} has no port; {hint}")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, like [::1]:9001")
        if not _is_hostname(host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name")
        if not re.fullmatch(r"[0-9.]+", host):
            raise ValueError(f"{host!r} is a host name, but Envoy does not resolve names in endpoints it gets "
                             "over EDS: give an IP address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} in {text!r} is not a number from 1 to 65535")
    return host, int(port)


def _is_hostname(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):  # looks numeric: must then be a valid IPv4 address
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOSTNAME_LABEL.fullmatch(label) for label in labels)


def path_start(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must start with '/'")
    if _CONTROL.search(text) or " " in text:
        raise ValueError(f"{text!r} holds a space or control character")
    return text


def re2_regex(text: str) -> str:
    """A regex Envoy accepts: RE2 compiles it, within Envoy's program size limit."""
    for construct, name in _NOT_RE2:
        if construct.search(text):
            raise ValueError(f"Envoy's regex engine (RE2) does not support {name}")
    try:
        compiled = re2.compile(text, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"regex does not compile in RE2 (Envoy's engine): {reason}") from None
    if compiled.programsize > ENVOY_MAX_PROGRAM_SIZE:
        raise ValueError(f"regex is too large for Envoy: RE2 program size {compiled.programsize}, "
                         f"more than {ENVOY_MAX_PROGRAM_SIZE}; use smaller counted repeats like {{1,9}}")
    return text


def match_header_name(text: str) -> str:
    """A header to match on: a token, or a pseudo-header like `:authority`; kept in lower case."""
    if not _TOKEN.fullmatch(text.removeprefix(":")):
        raise ValueError(f"{text!r} is not a valid header name")
    return text.lower()


def rule_header_name(text: str) -> str:
    """A header to add or remove: Envoy rejects the whole route table if it is `host` or `:`-prefixed."""
    if text.startswith(":") or text.lower() == "host":
        raise ValueError(f"Envoy rejects header rules on {text!r}: host and ':' headers cannot be added or removed")
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)")
    return text.lower()


def identity_header_name(text: str) -> str:
    """The header ext_authz's identity assertions travel in: a header to remove (see rule_header_name) that is
    none of the headers ext_authz refuses to set (extauthz/identity_config.py checks the same on its side)."""
    name = rule_header_name(text)
    if name in RESERVED_HEADERS:
        raise ValueError(f"{name!r} is a reserved header; an identity assertion cannot travel in it")
    return name


def header_value(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("header value holds a control character (newline, NUL...)")
    return text


def match_text(text: str) -> str:
    """The text of a `prefix`, `suffix` or `contains` condition: Envoy refuses it empty (any value matches)."""
    if not text:
        raise ValueError("an empty text matches every value; write `present: true` instead")
    return header_value(text)


def query_name(text: str) -> str:
    """A query parameter's name as Envoy compares it (case-sensitive, 1 to 1024 bytes)."""
    if not text or len(text.encode()) > 1024:
        raise ValueError("a query parameter name holds 1 to 1024 bytes")
    if _CONTROL.search(text) or any(char in text for char in " &=#"):
        raise ValueError(f"{text!r} holds a space, '&', '=', '#' or a control character")
    return text


def cookie_name(text: str) -> str:
    """A cookie name (RFC 6265: an HTTP token), kept as written: cookie names are case-sensitive."""
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)")
    return text


def true_only(value: bool) -> bool:
    """`source_ip: true`: false would hash on nothing, so it is refused rather than ignored."""
    if not value:
        raise ValueError("false hashes on nothing; leave the entry out")
    return value


def query_present(value: bool) -> bool:
    """`present:` of a query condition: Envoy's QueryParameterMatcher has no inverted form, so no absence."""
    if not value:
        raise ValueError("Envoy cannot require a query parameter to be absent (its query matcher has no "
                         "inverted form); match the other case in a route of its own, or use a header")
    return value


def added_header_value(text: str) -> str:
    """Values Envoy adds are format strings: `%VAR%` is substituted and `%%` is a literal `%`."""
    header_value(text)
    if text.replace("%%", "").count("%") % 2:
        raise ValueError(f"{text!r} has an unclosed %...% expression; write %% for a literal %")
    return text


def domain(text: str) -> str:
    """A virtual host domain as Envoy reads it: `*`, or one `*` at the start or the end."""
    if text == "*":
        return text
    if not text or _CONTROL.search(text) or " " in text:
        raise ValueError(f"{text!r} is not a host name")
    if text.count("*") > 1 or ("*" in text and not (text.startswith("*") or text.endswith("*"))):
        raise ValueError(f"{text!r}: a wildcard '*' may only be the first or the last character")
    return text.lower()


REDIRECT_CODES = (301, 302, 303, 307, 308)
# Envoy answers a direct response body of more than this with a rejected route table
# (RouteConfiguration max_direct_response_body_size_bytes, left at its default).
MAX_DIRECT_RESPONSE_BODY = 4096
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>[^/:?#\[\]]+|\[[^\]/?#]+\])(?P<port>:[0-9]{1,5})?")


def cors_origin(text: str) -> str:
    """An origin a browser sends: `scheme://host[:port]`, lower case; `*.` may stand for the first
    labels of the host; `*` alone is any origin. Kept in the lower-case form browsers send."""
    if text == "*":
        return text
    found = _ORIGIN.fullmatch(text.lower())
    if found is None:
        raise ValueError(f"{text!r} is not an origin: write scheme://host or scheme://host:port, like "
                         "https://app.example.com (http or https, no path and no trailing /)")
    host = found["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif not _is_hostname(host.removeprefix("*.")) or "*" in host.removeprefix("*."):
        raise ValueError(f"{text!r}: {host!r} is not a host name; a wildcard is written *.example.com")
    if host.startswith("*.") and "." not in host[2:]:
        raise ValueError(f"{text!r}: *. must be followed by a domain of two labels or more, like *.example.com")
    port = found["port"]
    if port is not None and not 1 <= int(port[1:]) <= 65535:
        raise ValueError(f"{text!r}: port {port[1:]} is not a number from 1 to 65535")
    return text.lower()


def cors_header_name(text: str) -> str:
    """A header named in a CORS policy, in lower case. Not `*`: Fetch never lets it stand for Authorization."""
    if text == "*":
        raise ValueError("name the headers: '*' never covers Authorization in a browser, and not at all with "
                         "credentials")
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid header name")
    return text.lower()


def whole_seconds(text: str) -> int:
    """A duration Envoy takes as a number of seconds (CORS max_age)."""
    seconds = parse_duration(text)
    if seconds < 0 or seconds != int(seconds):
        raise ValueError(f"{text!r} must be a whole number of seconds, 0 or more")
    return int(seconds)


def redirect_code(code: int) -> int:
    if code not in REDIRECT_CODES:
        raise ValueError(f"{code} is not a redirect code; one of {', '.join(map(str, REDIRECT_CODES))}")
    return code


def redirect_host(text: str) -> str:
    """The host a redirect sends to: a host name or IP address, without scheme or port."""
    if ":" in text or "/" in text or not _is_hostname(text):
        raise ValueError(f"{text!r} is not a host name; give the port in `port` and the scheme with `https`")
    return text.lower()


def direct_response_body(text: str) -> str:
    size = len(text.encode())
    if size > MAX_DIRECT_RESPONSE_BODY:
        raise ValueError(f"body is {size} bytes, more than the {MAX_DIRECT_RESPONSE_BODY} Envoy accepts")
    return text
