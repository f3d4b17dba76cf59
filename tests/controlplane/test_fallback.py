from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache
from controlplane.config.load import load_config
from controlplane.config.model import Config, Route
from controlplane.fallback import RouteFallback
from controlplane.nacks import NackAttributor
from controlplane.server.stream import Nack, StreamState
from controlplane.status import StatusBoard
from controlplane.translate import translate
from controlplane.watch import Reloader
from pavilion.log import configure_logging

BASE = """
regions: [eu-west]
listeners: [{name: public, address: 127.0.0.1, port: 10000}]
services: [{name: blue, endpoints: [{address: 127.0.0.1:9000, region: eu-west}]}]
routes:
  - {name: a, match: {prefix: /a}, service: blue, timeout: %s}
  - {name: b, match: {prefix: /b}, service: blue}
"""


def config(tmp_path: Path, timeout: str, extra: str = "") -> Config:
    (tmp_path / "r.yaml").write_text(BASE % timeout + extra)
    return load_config(tmp_path)


def test_a_refused_route_serves_its_accepted_form_until_edited(tmp_path: Path) -> None:
    fallback = RouteFallback()
    good = config(tmp_path, "2s")
    fallback.record_accepted(good)
    bad = config(tmp_path, "9s", "  - {name: c, match: {prefix: /c}, service: blue}\n")
    fallback.refuse(next(r for r in bad.routes if r.name == "a"), ["envoy: no"], "eu-west")
    fallback.refuse(next(r for r in bad.routes if r.name == "c"), ["envoy: no"], "eu-west")
    served = fallback.apply(bad)
    assert {r.name: r.timeout for r in served.routes} == {"a": 2.0, "b": None}  # c never accepted: left out
    assert fallback.status("a")["serving"] == "last accepted form"  # type: ignore[index]
    assert fallback.status("c")["serving"] == "left out (never accepted)"  # type: ignore[index]
    edited = config(tmp_path, "3s", "  - {name: c, match: {prefix: /c}, service: blue}\n")
    assert {r.name: r.timeout for r in fallback.apply(edited).routes} == {"a": 3.0, "b": None}  # a edited: tried
    assert fallback.status("a") is None and fallback.status("c") is not None


async def loaded(tmp_path: Path) -> tuple[SnapshotCache, StatusBoard, RouteFallback, Reloader]:
    """The config side of a control plane, with `config(tmp_path, "2s")` loaded."""
    configure_logging("warning", "console", io.StringIO())
    cache = SnapshotCache(translate)
    board = StatusBoard(cache, identifier="t")
    fallback = RouteFallback()
    reloader = Reloader(str(tmp_path), cache, board, loader=load_config, served=fallback.apply)
    config(tmp_path, "2s")
    assert await reloader.reload()
    return cache, board, fallback, reloader


async def test_a_route_nack_is_attributed_off_the_loop_and_the_rest_is_served(tmp_path: Path) -> None:
    cache, _board, fallback, reloader = await loaded(tmp_path)
    fallback.record_accepted(cache.config)
    config(tmp_path, "9s")
    assert await reloader.reload()
    refused_version = cache.config_version
    checked: list[str] = []

    def check(served: Config, region: str) -> dict[str, list[str]]:
        checked.append(region)
        return {"a": ["envoy: timeout out of range"]}

    nacks = NackAttributor(cache, reloader, fallback, check=check)
    stream = StreamState(peer="test")
    stream.group = Group("eu-west", "edge")
    await cache.snapshot(stream.group)
    routes = stream.type(urls.ROUTE)
    routes.nack = Nack(version="v-bad", error="Proto constraint validation failed", at=0.0)
    nacks.on_nack(stream, routes)
    nacks.on_nack(stream, routes)  # the same refusal from a second proxy: attributed once
    await nacks.drain()
    assert checked == ["eu-west"]
    assert cache.config_version != refused_version
    assert {r.name: r.timeout for r in cache.config.routes} == {"a": 2.0, "b": None}
    await asyncio.sleep(0)


@pytest.mark.parametrize("error, named", [
    ("Error adding/updating listener(s) public: cannot bind '1.2.3.4:1': Cannot assign", ["public"]),
    ("Error adding/updating listener(s) public-2: cannot bind", []),
    # The HTTP/3 twin of a listener is attributed to the listener's own entry.
    ("Error adding/updating listener(s) public-h3: cannot bind '1.2.3.4:1': Cannot assign", ["public"]),
])
async def test_a_listener_nack_is_attributed_by_name(tmp_path: Path, error: str, named: list[str]) -> None:
    cache, _board, fallback, reloader = await loaded(tmp_path)
    nacks = NackAttributor(cache, reloader, fallback)
    stream = StreamState(peer="test")
    stream.group = Group("eu-west", "edge")
    listeners = stream.type(urls.LISTENER)
    listeners.nack = Nack(version="v-bad", error=error, at=0.0)
    nacks.on_nack(stream, listeners)
    await nacks.drain()
    assert sorted(fallback.listener_status()) == named
    if named:
        assert fallback.listener_status()["public"]["source"].endswith("r.yaml:3:13")
    else:
        assert nacks.unattributed["Listener"]["error"] == error


LISTENERS = """
regions: [eu-west]
listeners:
  - {name: public, address: 127.0.0.1, port: 10000}
  - {name: side, address: %s, port: 10001}
services: [{name: blue, endpoints: [{address: 127.0.0.1:9000, region: eu-west}]}]
routes:
  - {name: a, listener: public, match: {prefix: /a}, service: blue, timeout: %s}
  - {name: s, listener: side, match: {prefix: /s}, service: blue}
"""


async def test_a_refused_listener_serves_its_accepted_form_and_the_rest_of_the_edit_moves_on(tmp_path: Path) -> None:
    from controlplane.route_status import RouteStatus

    configure_logging("warning", "console", io.StringIO())
    cache = SnapshotCache(translate)
    board = StatusBoard(cache, identifier="t")
    fallback = RouteFallback()
    board.refused_listeners = fallback.listener_status  # as the app wires it
    reloader = Reloader(str(tmp_path), cache, board, loader=load_config, served=fallback.apply)
    nacks = NackAttributor(cache, reloader, fallback)
    status = RouteStatus(board, reloader, fallback, nacks)
    side = tmp_path / "r.yaml"
    side.write_text(LISTENERS % ("127.0.0.1", "2s"))
    assert await reloader.reload()
    stream = StreamState(peer="test")
    stream.group = Group("eu-west", "edge")
    await cache.snapshot(stream.group)

    def ack_listeners() -> None:
        listeners.acked_version = cache.current(stream.group).type(urls.LISTENER).version  # type: ignore[arg-type, union-attr]
        nacks.on_ack(stream, listeners)

    listeners = stream.type(urls.LISTENER)
    ack_listeners()  # a proxy took both listeners: their accepted forms
    # One edit: route a changes, side moves to an address Envoy cannot bind, and a new listener
    # (with a route on it) that Envoy also refuses and that was never accepted.
    side.write_text(LISTENERS % ("192.0.2.10", "9s"))
    (tmp_path / "new.yaml").write_text("listeners:\n  - {name: new, address: 192.0.2.10, port: 10002}\n"
                                       "routes:\n  - {name: n, listener: new, match: {prefix: /n}, service: blue}\n")
    assert await reloader.reload()
    refused_version = cache.config_version
    listeners.nack = Nack(version="v-bad", error="Error adding/updating listener(s) side: cannot bind "
                          "'192.0.2.10:10001', new: cannot bind '192.0.2.10:10002'", at=0.0)
    nacks.on_nack(stream, listeners)
    nacks.on_nack(stream, listeners)  # the same refusal again: attributed once
    await nacks.drain()
    served = cache.config
    assert cache.config_version != refused_version  # a new version: the refused one is never sent again
    assert {item.name: item.address for item in served.listeners} == {"public": "127.0.0.1", "side": "127.0.0.1"}
    assert {r.name: r.timeout for r in served.routes} == {"a": 9.0, "s": None}  # n left out with its listener
    shown = fallback.listener_status()
    assert shown["side"]["serving"] == "last accepted form" and shown["side"]["source"].endswith("r.yaml:5:5")
    assert shown["new"]["serving"] == "left out (never accepted)"
    routes = {r["name"]: r for r in status.render()["routes"]}
    assert "left out" in routes["n"]["rejected"]["serving"] and not routes["n"]["programmed"]
    assert "rejected" not in routes["s"] and "rejected" not in routes["a"]
    assert sorted(status.render()["refused_listeners"]) == ["new", "side"]
    assert sorted(board.render()["refused_listeners"]) == ["new", "side"]
    ack_listeners()  # the fallback is acked: the refused forms do not become accepted
    assert fallback.listener_status()["side"]["serving"] == "last accepted form"
    assert await reloader.reload()  # the same files again: still held, same served version
    assert cache.config == served
    side.write_text(LISTENERS % ("127.0.0.2", "9s"))  # the team's fix ends side's fallback
    (tmp_path / "new.yaml").unlink()
    assert await reloader.reload()
    assert {item.name: item.address for item in cache.config.listeners} == {"public": "127.0.0.1",
                                                                            "side": "127.0.0.2"}
    assert fallback.listener_status() == {}


@pytest.mark.parametrize("kind", ["sotw", "delta"])
async def test_programmed_counts_proxies_holding_each_routes_current_form(tmp_path: Path, kind: str) -> None:
    from controlplane.route_status import RouteStatus

    cache, board, fallback, reloader = await loaded(tmp_path)
    group = Group("eu-west", "edge")
    snapshot = await cache.snapshot(group)
    for number in range(2):
        stream = StreamState(peer=f"p{number}", kind=kind)
        stream.group = group
        routes = stream.type(urls.ROUTE)
        routes.subscribed = True
        if number == 0:  # the other proxy has acked nothing yet
            # A Delta proxy's routes are in the virtual hosts it acked; its tables are VHDS shells.
            holding = stream.type(urls.VIRTUAL_HOST) if kind == "delta" else routes
            holding.acked_resources = dict(snapshot.type(holding.type_url).resources)
            if kind == "delta":
                routes.acked_resources = dict(snapshot.type(urls.ROUTE).delta.resources)  # type: ignore[union-attr]
        board.streams[stream.stream_id] = stream
    config(tmp_path, "5s")  # route a changes; b is the same inside the same, changed, route table
    assert await reloader.reload()
    status = RouteStatus(board, reloader, fallback, NackAttributor(cache, reloader, fallback))
    shown = {r["name"]: r for r in status.render()["routes"]}
    assert shown["a"]["proxies"] == {"eu-west": {"acked": 0, "of": 2}} and not shown["a"]["programmed"]
    assert shown["b"]["proxies"] == {"eu-west": {"acked": 1, "of": 2}} and not shown["b"]["programmed"]
    assert shown["a"]["accepted"] and shown["a"]["resolved_refs"] and shown["a"]["source"].endswith("r.yaml:6:5")


async def test_routes_of_a_refused_edit_are_not_accepted(tmp_path: Path) -> None:
    from controlplane.route_status import RouteStatus
    from controlplane.status_cli import render

    cache, board, fallback, reloader = await loaded(tmp_path)
    status = RouteStatus(board, reloader, fallback, NackAttributor(cache, reloader, fallback))
    assert all(r["accepted"] for r in status.render()["routes"])
    (tmp_path / "z.yaml").write_text("routes:\n  - {name: z, match: {prefix: /z}, service: nowhere}\n"
                                     "  - {name: a, match: {prefix: /a}, service: blue}\n")
    assert not await reloader.reload()
    shown = {r["name"]: r for r in status.render()["routes"]}
    assert not shown["z"]["accepted"] and "nowhere" in shown["z"]["errors"][0]
    assert "z.yaml:2:" in shown["z"]["source"]
    assert not shown["a"]["accepted"] and shown["b"]["accepted"]  # a clashes with r.yaml's a
    text = render(board.render(), status.render())
    assert "route z: last edit refused:" in text
    (tmp_path / "z.yaml").unlink()
    assert await reloader.reload()  # unchanged config, applied again: the refusal is over
    assert all(r["accepted"] for r in status.render()["routes"])


def test_a_form_refused_in_one_region_and_acked_in_another_is_left_out(tmp_path: Path) -> None:
    fallback = RouteFallback()
    served = config(tmp_path, "9s")
    fallback.record_accepted(served)  # eu-west took it
    fallback.refuse(next(r for r in served.routes if r.name == "a"), ["envoy: no"], "us-east")
    fallback.record_accepted(served)  # a late ACK of the same version does not bring it back
    assert [r.name for r in fallback.apply(served).routes] == ["b"]  # a new version: never the refused one


class CountedRoutes(tuple):  # type: ignore[type-arg]
    """A config's routes that count how often they are walked."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountedRoutes.walks += 1
        return super().__iter__()


def test_every_proxys_ack_of_one_config_records_its_routes_once_until_a_refusal(tmp_path: Path) -> None:
    from controlplane.fallback import Holds

    served = config(tmp_path, "9s")
    routes = CountedRoutes(served.routes)
    holds: Holds[Route] = Holds()
    for _proxy in range(3):
        holds.record_accepted(routes)
    assert CountedRoutes.walks == 1 and set(holds.accepted) == {"a", "b"}
    a9 = holds.accepted["a"]
    routes5 = config(tmp_path, "5s").routes
    holds.refuse(next(r for r in routes5 if r.name == "a"), ["envoy: no"], "eu-west")
    holds.record_accepted(routes)  # a refusal since: walked again (and the refused form stays out)
    holds.record_accepted(routes5)
    assert CountedRoutes.walks == 2 and holds.accepted["a"] == a9


async def test_a_delta_proxy_accepts_routes_by_acking_their_virtual_hosts(tmp_path: Path) -> None:
    cache, _board, fallback, reloader = await loaded(tmp_path)
    nacks = NackAttributor(cache, reloader, fallback)
    stream = StreamState(peer="d", kind="delta")
    stream.group = Group("eu-west", "edge")
    snapshot = await cache.snapshot(stream.group)
    tables = stream.type(urls.ROUTE)
    tables.acked_version = snapshot.type(urls.ROUTE).version
    nacks.on_ack(stream, tables)
    assert not fallback.accepted  # a VHDS shell holds no routes: its ACK accepts none
    hosts = stream.type(urls.VIRTUAL_HOST)
    hosts.acked_version = snapshot.type(urls.VIRTUAL_HOST).version
    nacks.on_ack(stream, hosts)
    assert set(fallback.accepted) == {route.name for route in cache.config.routes}  # type: ignore[union-attr]
