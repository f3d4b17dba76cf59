from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.procs import Proc, start_redis


@pytest.fixture
def redis_server() -> Iterator[tuple[Proc, int]]:
    """A fresh redis-server for one test: (process, port)."""
    proc, port = start_redis()
    try:
        yield proc, port
    finally:
        proc.stop()
