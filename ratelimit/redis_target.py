"""Where the rate-limit service finds Redis (`--redis URL`): its address, credentials, database and TLS.

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
    rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ssl_ca_certs=PATH]   TLS: the server's certificate is
        checked against the system's CAs, or those in PATH, and must name HOST
    unix://[[USER]:PASSWORD@]/PATH[?db=DB]                            a Redis on this host

These are redis-py's URL forms, which `pavilion extauthz --redis` takes, so one secret can serve both
services. A managed Redis usually wants a password (`AUTH`, with a user for Redis 6 ACLs) and TLS.
`--redis-cluster` takes seed nodes, `HOST:PORT,HOST:PORT,...`, or the same with a URL's scheme,
credentials and TLS parameters around them (`rediss://:PASSWORD@HOST:PORT,HOST:PORT?ssl_ca_certs=PATH`),
which every node of the cluster then gets.
The password never appears in logs or errors: logs name `address`, errors show the URL through
`pavilion.log.redact_url`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from pavilion.log import redact_url

DEFAULT_PORT = 6379
_FORMS = "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) or unix:///PATH"


@dataclass(frozen=True)
class RedisTarget:
    host: str = ""
    port: int = DEFAULT_PORT
    path: str | None = None  # a Unix socket instead of host and port
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: bool = False
    ca_file: str | None = None

    @property
    def address(self) -> str:
        """HOST:PORT or the socket's path: what logs and errors name (never the credentials)."""
        return self.path or f"{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that verifies the server (hostname included), or None without TLS."""
        return ssl.create_default_context(cafile=self.ca_file) if self.tls else None

    def handshake(self) -> list[tuple[str | int, ...]]:
        """The commands a new connection sends before any other: AUTH, then SELECT."""
        commands: list[tuple[str | int, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def parse_redis_url(url: str, flag: str = "--redis") -> RedisTarget:
    """A `RedisTarget` from `--redis`; ValueError naming what is wrong (the password left out)."""
    parts = urlsplit(url if "://" in url else f"redis://{url}")
    shown = f"{flag} {redact_url(url)}"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown}: {exc}") from exc
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"ssl_ca_certs", "db"})
    if unknown:
        raise ValueError(f"{shown}: unknown parameter {', '.join(unknown)} (known: ssl_ca_certs, db)")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if parts.scheme == "unix":
        if not parts.path or parts.hostname:
            raise ValueError(f"{shown}: expected unix:///PATH (an absolute socket path)")
        return RedisTarget(path=parts.path, username=username, password=password,
                           db=_number(query.get("db", ["0"])[0], shown))
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{shown}: expected {_FORMS}")
    db_text = parts.path.strip("/") or query.get("db", ["0"])[0]
    ca_file = query.get("ssl_ca_certs", [None])[0]
    if ca_file is not None and parts.scheme != "rediss":
        raise ValueError(f"{shown}: ssl_ca_certs needs rediss:// (TLS)")
    return RedisTarget(host=parts.hostname, port=port or DEFAULT_PORT, username=username, password=password,
                       db=_number(db_text, shown), tls=parts.scheme == "rediss", ca_file=ca_file)


def parse_cluster_seeds(text: str) -> tuple[RedisTarget, list[tuple[str, int]]]:
    """`--redis-cluster`: what every node gets (credentials, TLS; no host) and the seed nodes."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        scheme, rest = "", text.strip()
    credentials, at, hosts = rest.rpartition("@")
    hosts, _, query = hosts.partition("?")
    hosts, _, db = hosts.partition("/")
    if db.strip("/") not in ("", "0"):
        raise ValueError(f"--redis-cluster {redact_url(text)}: a cluster has database 0 only")
    seeds = []
    for item in filter(None, (part.strip() for part in hosts.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--redis-cluster {redact_url(text)}: {item!r} is not HOST:PORT")
        seeds.append((host, int(port)))
    if not seeds:
        raise ValueError(f"--redis-cluster {redact_url(text)}: needs at least one HOST:PORT")
    if not scheme:
        return RedisTarget(), seeds
    first = f"{seeds[0][0]}:{seeds[0][1]}"
    template = parse_redis_url(f"{scheme}://{credentials}{at}{first}" + (f"?{query}" if query else ""),
                               "--redis-cluster")
    if template.path:
        raise ValueError(f"--redis-cluster {redact_url(text)}: cluster nodes are HOST:PORT, not a socket")
    return template, seeds


def _number(text: str, shown: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{shown}: the database must be a number, not {text!r}")
    return int(text)

