"""A change the loader accepts but Envoy refuses, with the real Envoy: the NACK is attributed to the
route entry, that entry keeps its last accepted form (or is left out) while the rest of the edit is
served, and `/status/routes`, `pavilion status` and `pavilion plan` tell the team. A listener Envoy
refuses (an address it cannot bind) falls back the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_procs import Gateway, get_json, request, running_gateway, start_upstreams
from tests.integration.test_gateway_reload import BASE, pushes, seconds_until_served
from tests.procs import PAVILION, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sotw", "delta"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config_dir: Path = tmp_path_factory.mktemp("routes")
    listen = free_port()
    upstreams = start_upstreams({"blue": "eu-west", "green": "eu-west"})
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    (config_dir / "base.yaml").write_text(BASE.format(listen=listen, **ports))
    with running_gateway(config_dir, listen, upstreams, delta=request.param == "delta") as gw:
        gw.plane.wait_synced(1)
        yield gw


def routes_status(gateway: Gateway) -> dict[str, Any]:
    return get_json(f"http://127.0.0.1:{gateway.plane.admin_port}/status/routes")


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(what)


def route(gateway: Gateway, name: str) -> dict[str, Any]:
    return next(r for r in routes_status(gateway)["routes"] if r["name"] == name)


TEAM = "routes:\n  - {{name: team, match: {{prefix: /team}}, service: green, timeout: {timeout}}}\n"


def test_a_refused_route_keeps_its_last_accepted_form_while_the_rest_moves_on(gateway: Gateway) -> None:
    plane = gateway.plane
    team = plane.config_dir / "team.yaml"
    team.write_text(TEAM.format(timeout="2s"))
    try:
        seconds_until_served(gateway, "/team", "green")
        wait_for(lambda: route(gateway, "team")["programmed"], "team programmed")
        # One edit: team's timeout is out of Envoy's range (the loader accepts it), and two new routes,
        # one fine and one that never had an accepted form.
        team.write_text(TEAM.format(timeout="99999999999d")
                        + "  - {name: team-new, match: {prefix: /team-new}, service: blue}\n"
                        + "  - {name: team-bad, match: {prefix: /team-bad}, service: blue, timeout: 99999999999d}\n")
        seconds_until_served(gateway, "/team-new", "blue", timeout=30)  # the rest of the edit moves on
        refused = wait_for(lambda: route(gateway, "team").get("rejected"), "team refused")
        assert refused["source"].endswith("team.yaml:2:5"), refused
        assert refused["serving"] == "last accepted form"
        assert any("uration" in line for line in refused["errors"]), refused
        bad = route(gateway, "team-bad")["rejected"]
        assert bad["serving"] == "left out (never accepted)"
        assert gateway.get("/team").served_by == "green"  # the last accepted form still routes
        assert gateway.get("/team-bad").served_by != "blue"  # left out: /team catches it, not team-bad
        status = plane.wait_synced(1)
        node = status["nodes"][0]
        # A Delta Envoy holds its routes as virtual hosts (VHDS): a refused route is a refused VirtualHost.
        routes_type = node["types"]["VirtualHost" if node["kind"] == "delta" else "RouteConfiguration"]
        assert routes_type["acked_version"] != routes_type["last_nack"]["version"]  # moved on under a new version
        assert wait_for(lambda: route(gateway, "team-new")["programmed"], "team-new programmed")
        assert not route(gateway, "team")["programmed"]

        listing = subprocess.run([PAVILION, "status", "--admin", f"127.0.0.1:{plane.admin_port}"],
                                 capture_output=True, text=True, timeout=30, check=False)
        assert listing.returncode == 2, listing.stderr
        assert "route team refused by Envoy in eu-west, serving its last accepted form" in listing.stdout
        assert "team-new" in listing.stdout and "eu-west 1/1" in listing.stdout

        team.write_text(TEAM.format(timeout="3s"))  # the team's fix is tried and served
        wait_for(lambda: "rejected" not in route(gateway, "team") and route(gateway, "team")["programmed"],
                 "fixed team programmed")
    finally:
        team.unlink()
    plane.wait_current(1)


SIDE = """listeners:
  - {{name: side, address: {address}, port: {port}}}
routes:
  - {{name: side, listener: side, match: {{prefix: /side}}, service: {service}}}
"""
def served_by(url: str) -> str:
    try:
        return request(url).served_by
    except OSError:  # the listener is not there (yet)
        return ""


EDITED = """listeners:
  - {{name: side, address: 192.0.2.10, port: {port}}}
  - {{name: far, address: 192.0.2.10, port: {far}}}
routes:
  - {{name: side, listener: side, match: {{prefix: /side}}, service: blue}}
  - {{name: far, listener: far, match: {{prefix: /far}}, service: blue}}
  - {{name: side-public, listener: public, match: {{prefix: /side-public}}, service: blue}}
"""


def test_a_refused_listener_keeps_its_last_accepted_form_while_the_rest_moves_on(gateway: Gateway) -> None:
    plane = gateway.plane
    side = plane.config_dir / "side.yaml"
    port = free_port()
    side_url = f"http://127.0.0.1:{port}/side"
    side.write_text(SIDE.format(address="127.0.0.1", port=port, service="green"))
    try:
        wait_for(lambda: served_by(side_url) == "green", "side listener served")
        plane.wait_current(1)
        # One edit: side moves to an address this machine does not have (Envoy cannot bind it) and its
        # route changes; a new listener, also unbindable, with a route on it; a new route on public.
        side.write_text(EDITED.format(port=port, far=free_port()))
        seconds_until_served(gateway, "/side-public", "blue", timeout=30)  # the rest of the edit moves on
        wait_for(lambda: served_by(side_url) == "blue", "side's route change served on its old address")
        refused = wait_for(lambda: len(routes_status(gateway)["refused_listeners"]) == 2
                           and routes_status(gateway)["refused_listeners"], "both listeners refused")
        assert refused["side"]["serving"] == "last accepted form", refused
        assert refused["side"]["source"].endswith("side.yaml:2:5"), refused
        assert "cannot bind '192.0.2.10" in " ".join(refused["side"]["errors"]), refused
        assert refused["far"]["serving"] == "left out (never accepted)", refused
        assert plane.status()["refused_listeners"] == refused
        far = route(gateway, "far")
        assert "left out" in far["rejected"]["serving"] and not far["programmed"], far
        assert "rejected" not in route(gateway, "side") and "rejected" not in route(gateway, "side-public")

        def settled() -> dict[str, Any] | None:
            listener: dict[str, Any] = plane.status()["nodes"][0]["types"]["Listener"]
            moved_on = listener.get("last_nack") and listener["acked_version"] != listener["last_nack"]["version"]
            return listener if moved_on and listener["sent_version"] == listener["acked_version"] else None

        wait_for(settled, "the fallback listeners acked")
        sent = pushes(gateway, "Listener")
        time.sleep(1.0)
        assert pushes(gateway, "Listener") == sent  # nothing is sent again in a loop
        assert gateway.get("/base").served_by == "blue"
        shown = subprocess.run([PAVILION, "status", "--admin", f"127.0.0.1:{plane.admin_port}"],
                               capture_output=True, text=True, timeout=30, check=False)
        assert shown.returncode == 2, shown.stdout + shown.stderr
        assert "listener side refused by Envoy in eu-west, serving its last accepted form" in shown.stdout

        side.write_text(SIDE.format(address="127.0.0.1", port=port, service="blue"))  # the fix ends the fallback
        wait_for(lambda: not routes_status(gateway)["refused_listeners"], "refusals gone")
        plane.wait_current(1)
    finally:
        side.unlink()
    plane.wait_current(1)


def test_pavilion_status_lists_routes_and_proxies(gateway: Gateway) -> None:
    plane = gateway.plane
    plane.wait_current(1)
    wait_for(lambda: route(gateway, "base")["programmed"], "base programmed")
    admin = f"127.0.0.1:{plane.admin_port}"
    shown = subprocess.run([PAVILION, "status", "--admin", admin], capture_output=True, text=True, timeout=30,
                           check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "base" in shown.stdout and "base.yaml:" in shown.stdout and "eu-west 1/1" in shown.stdout
    assert "edge-eu-west-0" in shown.stdout
    raw = subprocess.run([PAVILION, "status", "--admin", admin, "--json"], capture_output=True, text=True,
                         timeout=30, check=False)
    parsed = json.loads(raw.stdout)
    base = next(r for r in parsed["routes"]["routes"] if r["name"] == "base")
    assert base["accepted"] and base["resolved_refs"] and base["proxies"] == {"eu-west": {"acked": 1, "of": 1}}
    proxy = parsed["status"]["nodes"][0]
    assert proxy["region"] == "eu-west" and proxy["types"]["RouteConfiguration"]["acked_version"]
    down = subprocess.run([PAVILION, "status", "--admin", f"127.0.0.1:{free_port()}"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert down.returncode == 1 and "cannot read" in down.stderr


def test_plan_shows_what_would_change_without_applying_it(gateway: Gateway, tmp_path: Path) -> None:
    plane = gateway.plane
    served = plane.wait_current(1)["version"]
    admin = f"127.0.0.1:{plane.admin_port}"

    def plan(directory: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PAVILION, "plan", str(directory), "--admin", admin], capture_output=True, text=True,
                              timeout=60, check=False)

    same = plan(plane.config_dir)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "region eu-west: no change" in same.stdout
    edited = tmp_path / "edited"
    shutil.copytree(plane.config_dir, edited)
    base = edited / "base.yaml"
    base.write_text(base.read_text().replace("prefix: /base", "prefix: /based"))
    (edited / "more.yaml").write_text("services:\n  - name: extra\n    endpoints: [{address: 127.0.0.1:1, "
                                      "region: eu-west}]\n")
    changed = plan(edited)
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert "+ Cluster/extra" in changed.stdout and "+ ClusterLoadAssignment/extra" in changed.stdout
    assert "~ RouteConfiguration/public" in changed.stdout
    assert "VirtualHost" not in changed.stdout  # the tables' Delta form: their diff already shows it
    assert '-      prefix: "/base"\n+      prefix: "/based"' in changed.stdout
    assert plane.status()["version"] == served  # nothing applied
    (edited / "broken.yaml").write_text("routes:\n  - {name: x, match: {prefix: /x}, service: nowhere}\n")
    broken = plan(edited)
    assert broken.returncode == 1 and "broken.yaml:2" in broken.stderr
