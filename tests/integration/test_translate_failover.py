"""Translated clusters, endpoints and routes in a real Envoy (static bootstrap, no control plane):
local-region preference, failover when the local endpoint dies, fail-back when it returns, and a
retry that saves the request caught by the death."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from controlplane.config.model import (
    Backend,
    Config,
    Endpoint,
    HealthCheck,
    Listener,
    Match,
    OutlierDetection,
    Retries,
    Route,
    Service,
)
from tests.integration.translated_envoy import start_envoy
from tests.procs import Proc, free_port, start_echo

pytestmark = pytest.mark.integration


def served_by(port: int) -> str:
    """The echo name that answered GET / through Envoy, or `status N` / `error`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/any", timeout=5) as response:
            return str(json.loads(response.read())["name"])
    except urllib.error.HTTPError as exc:
        return f"status {exc.code}"
    except (urllib.error.URLError, OSError):
        return "error"


def eventually(port: int, expected: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = served_by(port)
        if seen == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"not served by {expected} within {timeout}s; last answer: {seen}")


@pytest.fixture
def fleet() -> Iterator[tuple[int, int, Proc, list[Proc]]]:
    """(envoy listener port, local echo port, envoy, echos) for an Envoy in eu-west."""
    local, local_port = start_echo("local", "eu-west")
    remote, remote_port = start_echo("remote", "us-east")
    echos = [local, remote]
    listen = free_port()
    config = Config(
        regions=("eu-west", "us-east"),
        listeners=(Listener("public", "127.0.0.1", listen),),
        services=(Service(
            "app", (Endpoint("127.0.0.1", local_port, "eu-west"), Endpoint("127.0.0.1", remote_port, "us-east")),
            health_check=HealthCheck("/healthz", interval=0.3, timeout=0.2, healthy_threshold=1, unhealthy_threshold=1),
            outlier_detection=OutlierDetection(consecutive_5xx=5, interval=0.5, base_ejection_time=1.0)),),
        routes=(Route("app", "public", Match(prefix="/"), (Backend("app"),),
                      retries=Retries(attempts=1, on=("connect-failure", "reset", "5xx"))),),
    )
    envoy = None
    try:
        envoy = start_envoy(config, "eu-west")
        yield listen, local_port, envoy, echos
    finally:
        if envoy is not None:
            envoy.stop()
        for echo in echos:
            echo.stop()


def test_local_first_then_failover_and_back(fleet: tuple[int, int, Proc, list[Proc]]) -> None:
    listen, local_port, _envoy, echos = fleet
    eventually(listen, "local")
    assert [served_by(listen) for _ in range(10)] == ["local"] * 10

    echos[0].kill()
    # The first request after the death is retried once, and in the other region (previous_priorities):
    # before health checks or outlier detection notice, the one retry must not go to the dead host again.
    assert served_by(listen) == "remote"
    eventually(listen, "remote")
    assert [served_by(listen) for _ in range(10)] == ["remote"] * 10

    restarted, _ = start_echo("local", "eu-west", port=local_port)
    echos.append(restarted)
    eventually(listen, "local")
    assert [served_by(listen) for _ in range(10)] == ["local"] * 10


def test_a_5xx_burst_that_ejects_every_host_does_not_become_an_outage() -> None:
    # Outlier detection may eject all hosts (max_ejection_percent 100). Envoy's panic threshold,
    # left at its default, then still sends traffic to them, so the service's recovery shows at once
    # instead of 503s for the whole ejection time (30 s here).
    echo, echo_port = start_echo("only", "eu-west")
    envoy = None
    try:
        listen = free_port()
        config = Config(
            regions=("eu-west",),
            listeners=(Listener("public", "127.0.0.1", listen),),
            services=(Service("app", (Endpoint("127.0.0.1", echo_port, "eu-west"),),
                              outlier_detection=OutlierDetection(consecutive_5xx=2, interval=0.5,
                                                                 base_ejection_time=30.0)),),
            routes=(Route("app", "public", Match(prefix="/"), (Backend("app"),)),),
        )
        envoy = start_envoy(config, "eu-west")
        eventually(listen, "only")
        request = urllib.request.Request(f"http://127.0.0.1:{echo_port}/_fail?count=3", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass
        assert [served_by(listen) for _ in range(3)] == ["status 503"] * 3  # the service's own 503s
        eventually(listen, "only", timeout=5.0)
    finally:
        if envoy is not None:
            envoy.stop()
        echo.stop()
