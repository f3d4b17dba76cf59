"""`--redis redis+sentinel://...`: a Redis that Redis Sentinel fails over, named by its sentinels.

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB][?sentinel_password=PW]

The hosts are sentinels (port 26379 when left out); MASTER_NAME is the group they monitor (`sentinel
monitor MASTER_NAME ...`). USER and PASSWORD are the master's (AUTH), DB is SELECTed on it, and
`sentinel_password` is sent to the sentinels when they want one (their `requirepass`). Both
services ask a sentinel for the current master, use it, and ask again when it stops answering as
the master, so a failover costs the seconds Sentinel takes to promote a replica. envoyproxy/ratelimit
reads the same as REDIS_TYPE=sentinel with REDIS_URL=MASTER_NAME,HOST:PORT,... TLS to sentinels is
not supported. The password never appears in errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from pavilion.log import redact_url

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
FORM = "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB][?sentinel_password=PW]"


@dataclass(frozen=True)
class SentinelUrl:
    master_name: str
    sentinels: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(f"{SCHEME}://")


def parse_sentinel_url(url: str, flag: str = "--redis") -> SentinelUrl:
    """ValueError naming what is wrong, with the password left out."""
    scheme, _, rest = url.strip().partition("://")
    rest, _, query_text = rest.partition("?")  # first: a sentinel password may hold an "@"
    credentials, at, location = rest.rpartition("@")
    query = parse_qs(query_text, keep_blank_values=True)
    shown = f"{flag} {redact_url(url.strip())}"
    if scheme.lower() != SCHEME:
        raise ValueError(f"{shown}: expected {FORM}")
    hosts, _, path = location.partition("/")
    master_name, _, db_text = path.strip("/").partition("/")
    if not master_name:
        raise ValueError(f"{shown}: the master's name is missing ({FORM})")
    if db_text and not db_text.isdigit():
        raise ValueError(f"{shown}: the database must be a number, not {db_text!r}")
    unknown = sorted(set(query) - {"sentinel_password"})
    if unknown:
        raise ValueError(f"{shown}: unknown parameter {', '.join(unknown)} (known: sentinel_password)")
    sentinels = []
    for item in filter(None, (part.strip() for part in hosts.split(","))):
        host, colon, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if not colon:
            host, port = item, str(DEFAULT_SENTINEL_PORT)
        if not host or not port.isdigit():
            raise ValueError(f"{shown}: {item!r} is not HOST[:PORT]")
        sentinels.append((host, int(port)))
    if not sentinels:
        raise ValueError(f"{shown}: needs at least one sentinel HOST[:PORT]")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinel_password = query.get("sentinel_password", [None])[0]
    return SentinelUrl(master_name=unquote(master_name), sentinels=tuple(sentinels), username=username,
                       password=password, db=int(db_text or 0), sentinel_password=sentinel_password)

