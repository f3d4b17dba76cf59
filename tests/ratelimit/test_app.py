"""Config reload in the rate-limit app: a change is picked up, a broken edit keeps the last good config."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ratelimit.app import Health, reload_on_change
from ratelimit.config import load_config
from ratelimit.limiter import Limiter
from ratelimit.memory_store import MemoryStore

GOOD = "domain: app\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: {n}}}\n"


class NoServer:
    async def set_serving(self, service: str, serving: bool) -> None:
        pass


async def _until(predicate, what: str, deadline: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"not {what} within {deadline}s")
        await asyncio.sleep(0.05)


def _limit(limiter: Limiter) -> int:
    return limiter.config.rules[0].limits[0].requests_per_unit


async def test_reload_on_change_keeps_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "rules" / "app.yaml"
    path.parent.mkdir()
    path.write_text(GOOD.format(n=5))
    limiter = Limiter(load_config(path.parent), MemoryStore())
    health = Health(NoServer(), limiter, None, interval=1.0)  # type: ignore[arg-type]
    stop = asyncio.Event()
    watcher = asyncio.create_task(reload_on_change(path.parent, limiter, health, stop))
    try:
        await asyncio.sleep(0.3)  # the watch is in place
        path.write_text(GOOD.format(n=7))
        await _until(lambda: _limit(limiter) == 7, "reloaded")
        path.write_text("domain: app\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n")
        (tmp_path / "rules" / "other.yaml").write_text(GOOD.format(n=9).replace("domain: app", "domain: other"))
        await asyncio.sleep(1.0)
        assert _limit(limiter) == 7  # the broken edit was refused as a whole
        path.write_text(GOOD.format(n=8))
        await _until(lambda: len(limiter.config.rules) == 2 and _limit(limiter) == 8, "reloaded after the fix")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(watcher, 5)


def refused_at_start(tmp_path: Path, event: str, **settings: Any) -> tuple[Mapping[str, Any], str]:
    """`run` with a good config file and `settings`: exit 2, its one `event` log line, and all it logged."""
    from structlog.testing import capture_logs

    from ratelimit.app import RateLimitSettings, run

    config = _write(tmp_path, GOOD.format(n=5))
    with capture_logs() as logs:
        assert run(RateLimitSettings(config=str(config), **settings)) == 2
    [refusal] = [entry for entry in logs if entry["event"] == event]
    return refusal, str(logs)


def test_a_bad_redis_url_stops_the_start_with_the_password_starred_out(tmp_path: Path) -> None:
    refusal, logged = refused_at_start(tmp_path, "bad_redis_url", redis_url="http://:hunter2@redis.internal")
    assert "http://:***@redis.internal: expected redis://" in refusal["detail"]
    assert "hunter2" not in logged
    refusal, logged = refused_at_start(tmp_path, "bad_redis_url", redis_url="redis+sentinel://:hunter2@s1:26379")
    assert "redis+sentinel://:***@s1:26379: the master's name is missing" in refusal["detail"]
    assert "hunter2" not in logged


def test_the_store_on_status_names_where_it_is_never_the_password(tmp_path: Path) -> None:
    from ratelimit.app import store_status
    from ratelimit.redis_store import RedisClusterStore, RedisStore

    limiter = Limiter(load_config(_write(tmp_path, GOOD.format(n=5))), MemoryStore())
    redis = RedisStore.from_url("rediss://lim:hunter2@cache.internal:6380/2")
    cluster = RedisClusterStore.from_hosts("redis://:hunter2@10.0.0.1:7000,10.0.0.2:7000")
    assert store_status(None, limiter, None) == {"kind": "memory", "serving": True}
    assert store_status(redis, limiter, None) == {"kind": "redis", "address": "cache.internal:6380", "db": 2,
                                                  "tls": True, "auth": True, "serving": True}
    assert store_status(cluster, limiter, None) == {"kind": "redis-cluster", "tls": False, "auth": True,
                                                    "seeds": ["10.0.0.1:7000", "10.0.0.2:7000"], "serving": True}


def _write(directory: Path, text: str) -> Path:
    path = directory / "rules.yaml"
    path.write_text(text)
    return path


def test_an_unknown_response_header_style_stops_the_start(tmp_path: Path) -> None:
    refusal, _ = refused_at_start(tmp_path, "bad_response_headers", response_headers="x-ratelimit")
    assert refusal["detail"] == "response headers 'x-ratelimit': give one of draft, envoyproxy, none"
