"""Route semantics that translation decides, checked in a real Envoy (static bootstrap, no control
plane): precedence regardless of YAML order, `hosts` as a filter (with ports stripped), methods,
headers, weights, rewrite, header rules that clients cannot spoof, and retries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from controlplane.config.model import (
    Backend,
    Config,
    Endpoint,
    HeaderMatch,
    HeaderRules,
    Listener,
    Match,
    Retries,
    Route,
    Service,
)
from tests.integration.gateway_procs import Reply, request
from tests.integration.translated_envoy import start_envoy
from tests.procs import Proc, free_port, start_echo

pytestmark = pytest.mark.integration

NAMES = ("a", "b", "c")


def routes() -> tuple[Route, ...]:
    # Written least specific first, as a careless merge of several files might put them.
    def route(name: str, match: Match, service: str = "a", **extra: object) -> Route:
        return Route(name=name, listener="public", match=match, backends=(Backend(service),), **extra)  # type: ignore[arg-type]

    return (
        route("catch-all", Match(prefix="/"), "a"),
        route("regex-catch-all", Match(regex="/.*x"), "c"),
        route("v1", Match(prefix="/v1"), "a", rewrite_prefix="/internal",
              request_headers=HeaderRules(add=(("x-from", "gateway"),), remove=("x-debug",)),
              response_headers=HeaderRules(add=(("strict-transport-security", "max-age=63072000"),))),
        route("v1-post", Match(prefix="/v1", methods=("POST", "PUT")), "b"),
        route("v1-canary", Match(prefix="/v1", headers=(HeaderMatch("x-canary", "yes"),)), "c"),
        route("items", Match(regex="/v1/items/[0-9]+"), "b"),
        route("exact", Match(path="/v1/me"), "c"),
        route("api-only", Match(prefix="/api"), "b", hosts=("api.example.com",)),
        route("flaky", Match(prefix="/flaky"), "b", retries=Retries(attempts=2, on=("5xx",))),
        Route("split", "public", Match(prefix="/split"), (Backend("a", 80), Backend("c", 20))),
    )


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[int, dict[str, int]]]:
    """(Envoy port, echo port by service name)."""
    started: list[Proc] = []
    try:
        ports = {}
        for name in NAMES:
            proc, ports[name] = start_echo(name, "eu-west")
            started.append(proc)
        listen = free_port()
        config = Config(
            regions=("eu-west",),
            listeners=(Listener("public", "127.0.0.1", listen),),
            services=tuple(Service(n, (Endpoint("127.0.0.1", ports[n], "eu-west"),)) for n in NAMES),
            routes=routes(),
        )
        started.append(start_envoy(config, "eu-west"))
        yield listen, ports
    finally:
        for proc in reversed(started):
            proc.stop()


def get(gateway: tuple[int, dict[str, int]], path: str, method: str = "GET", **headers: str) -> Reply:
    return request(f"http://127.0.0.1:{gateway[0]}{path}", method=method, headers=headers)


def test_most_specific_route_wins_whatever_the_yaml_order(gateway: tuple[int, dict[str, int]]) -> None:
    assert get(gateway, "/v1/me").served_by == "c"                 # exact path
    assert get(gateway, "/v1/items/42").served_by == "b"           # regex with a longer literal start
    assert get(gateway, "/v1/other").served_by == "a"              # prefix /v1
    assert get(gateway, "/zzx").served_by == "c"                   # regex /.*x before prefix /
    assert get(gateway, "/zz").served_by == "a"                    # catch-all


def test_methods_and_headers(gateway: tuple[int, dict[str, int]]) -> None:
    assert get(gateway, "/v1/other", method="POST").served_by == "b"
    assert get(gateway, "/v1/other", method="PUT").served_by == "b"
    assert get(gateway, "/v1/other", method="DELETE").served_by == "a"
    assert get(gateway, "/v1/other", **{"x-canary": "yes"}).served_by == "c"
    assert get(gateway, "/v1/other", **{"x-canary": "no"}).served_by == "a"


def test_hosts_filter_routes_and_ignore_the_port(gateway: tuple[int, dict[str, int]]) -> None:
    assert get(gateway, "/api/y", Host="api.example.com").served_by == "b"
    assert get(gateway, "/api/y", Host="API.example.com:10080").served_by == "b"
    assert get(gateway, "/api/y", Host="www.example.com").served_by == "a"   # falls to the catch-all
    # A host-specific route does not hide the `*` routes from that host.
    assert get(gateway, "/v1/me", Host="api.example.com").served_by == "c"


def test_rewrite_and_header_rules(gateway: tuple[int, dict[str, int]]) -> None:
    reply = get(gateway, "/v1/things", **{"x-from": "spoofed", "x-debug": "1"})
    assert reply.served_by == "a"
    assert reply.body["path"] == "/internal/things"
    sent = {k.lower(): v for k, v in reply.body["headers"].items()}
    assert sent["x-from"] == "gateway"
    assert "x-debug" not in sent
    assert reply.headers["strict-transport-security"] == "max-age=63072000"
    assert reply.headers["server"] == "pavilion"


def test_weighted_split_within_tolerance(gateway: tuple[int, dict[str, int]]) -> None:
    counts = Counter(get(gateway, "/split").served_by for _ in range(200))
    assert set(counts) == {"a", "c"}
    assert 0.70 <= counts["a"] / 200 <= 0.90, counts


def test_retry_hides_one_failure(gateway: tuple[int, dict[str, int]]) -> None:
    request(f"http://127.0.0.1:{gateway[1]['b']}/_fail?count=1", method="POST")
    assert get(gateway, "/flaky").status == 200
    request(f"http://127.0.0.1:{gateway[1]['b']}/_fail?count=1", method="POST")
    assert get(gateway, "/v1/other", method="POST").status == 503  # no retries on that route
