"""A real `pavilion ratelimit --inspect`: ShouldRateLimit calls exhaust a tenant's limit, then
`pavilion ratelimit-inspect` shows it OVER_LIMIT with nothing remaining and the reset, and asking
consumed nothing. Without --inspect the admin port has no /limits and the CLI says how to get it.
With --workers 2 on Redis the parent answers from the counters the workers share; without Redis it
serves no /limits (each worker counts in its own memory) and logs why."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.integration.ratelimit_procs import start_ratelimit
from tests.procs import PAVILION, start_redis

pytestmark = pytest.mark.integration

CONFIG = """\
domain: pavilion
descriptors:
  - key: route
    value: accounts
    descriptors:
      - key: tenant
        rate_limit: {unit: hour, requests_per_unit: 4, name: accounts-per-tenant}
"""
OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT


def request(tenant: str) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(domain="pavilion", descriptors=[ratelimit_pb2.RateLimitDescriptor(
        entries=[entry(key="route", value="accounts"), entry(key="tenant", value=tenant)])])


def inspect(admin: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAVILION, "ratelimit-inspect", "--admin", f"127.0.0.1:{admin}", *args],
                          capture_output=True, text=True, timeout=30)


def test_inspect_shows_an_exhausted_limit_without_consuming(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    service, port, admin = start_ratelimit(config, extra=["--inspect"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            codes = [stub.ShouldRateLimit(request("acme"), timeout=10).overall_code for _ in range(5)]
            assert codes == [OK] * 4 + [OVER]
            assert stub.ShouldRateLimit(request("globex"), timeout=10).overall_code == OK

            shown = inspect(admin, "--domain", "pavilion", "route=accounts,tenant=acme", "route=accounts,tenant=globex",
                            "route=billing")
            assert shown.returncode == 0, shown.stderr
            rows = {line.split()[0]: line.split() for line in shown.stdout.splitlines() if line.startswith("route=")}
            acme = rows["route=accounts,tenant=acme"]
            assert acme[1:6] == ["accounts-per-tenant", "4", "per", "hour", "(fixed_window)"]
            # The 5th call found the window over, so this process answers it without the store (known_over).
            assert acme[6] == "0" and 0 < float(acme[7]) <= 3600 and acme[8:] == ["OVER", "(known_over)", "OVER_LIMIT"]
            assert rows["route=accounts,tenant=globex"][6] == "3"
            assert "no rule (unlimited)" in " ".join(rows["route=billing"])
            assert f"accounts-per-tenant: {config}:6:9 (route=accounts,tenant)" in shown.stdout

            raw = inspect(admin, "--json", "route=accounts,tenant=globex")  # one domain: --domain may be left out
            assert raw.returncode == 0, raw.stderr
            for _ in range(10):
                globex = json.loads(inspect(admin, "--json", "route=accounts,tenant=globex").stdout)
            assert globex["descriptors"][0]["limit_remaining"] == 3 and globex["store"]["kind"] == "memory"
            # What globex has left is all still there after eleven checks.
            assert [stub.ShouldRateLimit(request("globex"), timeout=10).overall_code for _ in range(4)] == \
                [OK, OK, OK, OVER]

            refused = inspect(admin, "route=accounts,=x")
            assert refused.returncode == 2 and "descriptor:" in refused.stderr
    finally:
        service.stop()


def test_without_inspect_there_is_no_limits_page(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    service, _port, admin = start_ratelimit(config)
    try:
        shown = inspect(admin, "route=accounts,tenant=acme")
        assert shown.returncode == 1 and "start `pavilion ratelimit` with --inspect" in shown.stderr
    finally:
        service.stop()


def test_two_workers_on_redis_the_parent_answers_from_the_shared_counters(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    redis, redis_port = start_redis()
    service = None
    try:
        service, port, admin = start_ratelimit(config, extra=["--workers", "2", "--inspect", "--redis-timeout-ms",
                                                              "1000", "--redis", f"redis://127.0.0.1:{redis_port}"])
        proc = service
        proc.wait_until(lambda: proc.output().count("ratelimit_started") == 2, 30, "serving in both workers")
        codes = []
        for _ in range(5):
            # A fresh connection each time, so SO_REUSEPORT spreads them over both workers.
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                codes.append(rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                    request("acme"), timeout=10).overall_code)
        assert codes == [OK] * 4 + [OVER]
        shown = inspect(admin, "--json", "route=accounts,tenant=acme")
        assert shown.returncode == 0, shown.stderr
        answer = json.loads(shown.stdout)
        acme = answer["descriptors"][0]
        assert (acme["code"], acme["limit_remaining"], acme["limits"][0]["answered_by"]) == ("OVER_LIMIT", 0, "store")
        assert answer["store"]["kind"] == "redis" and 0 < acme["duration_until_reset"] <= 3600
        # The parent follows edits of the config as the workers do.
        config.write_text(CONFIG.replace("requests_per_unit: 4", "requests_per_unit: 9"))
        deadline = time.monotonic() + 15
        while True:
            acme = json.loads(inspect(admin, "--json", "route=accounts,tenant=acme").stdout)["descriptors"][0]
            if acme["limit_remaining"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (acme["code"], acme["limit_remaining"]) == ("OK", 4)  # 5 counted of 9
    finally:
        if service is not None:
            service.stop()
        redis.stop()


def test_two_workers_without_redis_serve_no_limits_and_say_why(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    service, _port, admin = start_ratelimit(config, extra=["--workers", "2", "--inspect"])
    try:
        shown = inspect(admin, "route=accounts,tenant=acme")
        assert shown.returncode == 1 and "--inspect" in shown.stderr
        assert "inspect_not_served" in service.output()
    finally:
        service.stop()
