"""The real Envoy enforcing limits end to end: Envoy's global ratelimit filter asks `pavilion ratelimit`
(on Redis) about two descriptors per request; 200s until the client's limit, then 429, with the
`RateLimit` headers reaching the client both ways."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ratelimit_procs import start_envoy, start_ratelimit
from tests.procs import Proc, start_echo, start_redis

pytestmark = pytest.mark.integration

CONFIG = """
domain: edge
descriptors:
  - key: client
    rate_limit: {unit: hour, requests_per_unit: 3, name: per-client}
  - key: generic_key
    value: api
    rate_limit: {unit: hour, requests_per_unit: 1000, name: api-total}
"""


def get(port: int, client: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/things", headers={"x-client": client})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@contextlib.contextmanager
def envoy_on_ratelimit(tmp_path: Path, config: Path, *extra: str) -> Iterator[int]:
    """Redis, `pavilion ratelimit --config CONFIG` on it, an echo upstream and Envoy in front; Envoy's port."""
    procs: list[Proc] = []
    try:
        redis, redis_port = start_redis()
        procs.append(redis)
        service, rl_port, _admin = start_ratelimit(config, extra=[*extra, "--redis", f"redis://127.0.0.1:{redis_port}",
                                                                    "--redis-timeout-ms", "500"])
        procs.append(service)
        echo, echo_port = start_echo("backend")
        procs.append(echo)
        envoy, port = start_envoy(tmp_path, rl_port, echo_port, "edge")
        procs.append(envoy)
        yield port
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_envoy_enforces_limits_with_ratelimit_headers(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    with envoy_on_ratelimit(tmp_path, config) as port:
        for remaining in (2, 1, 0):
            status, headers, body = get(port, "alice")
            assert status == 200, body
            assert json.loads(body)["name"] == "backend"
            assert headers["ratelimit-policy"] == '"per-client";q=3;w=3600, "api-total";q=1000;w=3600'
            assert headers["ratelimit"].startswith(f'"per-client";r={remaining};t=')
            assert "retry-after" not in headers
        status, headers, _ = get(port, "alice")
        assert status == 429
        assert headers["ratelimit"].startswith('"per-client";r=0;t=')
        assert 0 < int(headers["retry-after"]) <= 3600
        assert headers.get("x-envoy-ratelimited") == "true"
        # Another client has its own counter; the shared api-total counter saw all 5 requests.
        status, headers, _ = get(port, "bob")
        assert status == 200
        assert '"api-total";r=995;' in headers["ratelimit"]


def test_an_envoyproxy_ratelimit_deployment_moves_over_unchanged(tmp_path: Path) -> None:
    """What a team running envoyproxy/ratelimit has: one domain in two teams' files (its
    MERGE_DOMAIN_CONFIG: `--merge-domains`), `share_threshold` making every `team-*` client count on one
    Redis counter, and the headers its clients read (LIMIT_RESPONSE_HEADERS_ENABLED: `--response-headers
    envoyproxy`): about the descriptor closest to its limit, or the one over it."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "teams.yaml").write_text("""
domain: edge
descriptors:
  - key: client
    value: team-*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 3, name: teams}
  - key: client
    rate_limit: {unit: hour, requests_per_unit: 2, name: per-client}
""")
    (rules / "api.yaml").write_text("""
domain: edge
descriptors:
  - key: generic_key
    value: api
    rate_limit: {unit: hour, requests_per_unit: 6, name: api-total}
""")
    with envoy_on_ratelimit(tmp_path, rules, "--merge-domains", "--response-headers", "envoyproxy") as port:
        for remaining, client in ((2, "team-a"), (1, "team-b"), (0, "team-c")):
            status, headers, body = get(port, client)
            assert status == 200, body
            assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("3", str(remaining)), headers
            assert 0 < int(headers["ratelimit-reset"]) <= 3600
            assert "ratelimit-policy" not in headers and "ratelimit" not in headers
        status, headers, _ = get(port, "team-d")  # a fourth team, the same counter: over
        assert status == 429
        assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("3", "0")
        # Outside the wildcard each client has its own counter; api.yaml's limit counted all requests.
        status, headers, _ = get(port, "ops")
        assert status == 200
        assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("2", "1")  # per-client first
        status, headers, _ = get(port, "qa")
        assert status == 200
        assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("6", "0")  # api-total least
        status, headers, _ = get(port, "zed")
        assert status == 429
        assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("6", "0")
