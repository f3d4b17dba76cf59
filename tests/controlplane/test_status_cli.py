"""`pavilion status` text: a proxy that is not synced says which types it still waits for."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.status_cli import Replica, admin_addresses, healthy, merged_routes, render, render_replicas


def node(node_id: str, synced: bool, pending: list[str]) -> dict[str, Any]:
    return {"node_id": node_id, "kind": "delta", "region": "eu-west", "role": "edge", "synced": synced,
            "pending": pending, "last_seen": "2026-11-27T20:00:00.000Z", "types": {}}


def test_a_proxy_mid_handshake_names_the_types_it_waits_for() -> None:
    status = {"control_plane": "cp-1", "version": "v1", "generation": 3, "ready": True, "synced": False,
              "nodes": [node("edge-a", False, ["Listener", "RouteConfiguration"]), node("edge-b", True, [])]}
    lines = render(status, {"routes": []}).splitlines()
    [waiting] = [line for line in lines if line.startswith("edge-a")]
    [done] = [line for line in lines if line.startswith("edge-b")]
    assert "no (waits for Listener, RouteConfiguration)" in waiting
    assert " yes " in done and "waits" not in done


def test_a_pavilion_service_shows_the_version_of_its_own_type() -> None:
    ratelimit = node("ratelimit-1", True, [])
    ratelimit["types"] = {"RateLimitPolicy": {"acked_version": "abc123"}}
    status = {"control_plane": "cp-1", "version": "v1", "generation": 3, "ready": True, "synced": True,
              "nodes": [ratelimit]}
    [line] = [line for line in render(status, {"routes": []}).splitlines() if line.startswith("ratelimit-1")]
    assert line.endswith("RateLimitPolicy abc123")


# -- several replicas ----------------------------------------------------------------------------------

def replica(name: str, version: str, nodes: list[dict[str, Any]], routes: list[dict[str, Any]],
            **extra: Any) -> Replica:
    status = {"control_plane": name, "version": version, "generation": 1, "ready": True,
              "synced": all(n["synced"] for n in nodes), "nodes": nodes}
    return Replica(f"10.0.0.{len(name)}:18001", status, {"routes": routes, **extra})


def route(name: str, programmed: bool, acked: int, of: int) -> dict[str, Any]:
    return {"name": name, "listener": "public", "source": "base.yaml:9:5", "accepted": True,
            "resolved_refs": True, "programmed": programmed, "proxies": {"eu-west": {"acked": acked, "of": of}}}


def test_replicas_merge_into_one_row_per_route_with_proxies_summed() -> None:
    merged = merged_routes([{"routes": [route("base", True, 1, 1)]}, {"routes": [route("base", False, 0, 2)]}])
    assert merged == [{**route("base", False, 1, 3)}]


def test_a_route_only_one_replica_serves_is_not_programmed() -> None:
    [base, new] = merged_routes([{"routes": [route("base", True, 1, 1), route("new", True, 1, 1)]},
                                 {"routes": [route("base", True, 1, 1)]}])
    assert base["programmed"] and not new["programmed"]


def test_several_replicas_show_each_proxy_with_its_replica_and_tag_their_refusals() -> None:
    refused = {"source": "base.yaml:3:5", "region": "eu-west", "serving": "last accepted form",
               "errors": ["bad listener"]}
    one = replica("cp-one", "v1", [node("edge-a", True, [])], [route("base", True, 1, 1)],
                  refused_listeners={"public": refused})
    two = replica("cp-two", "v1", [node("edge-b", True, [])], [route("base", True, 1, 1)])
    text = render_replicas([one, two])
    lines = text.splitlines()
    assert any("cp-one" in line and "at 10.0.0.6:18001" in line for line in lines)
    assert "CONTROL PLANE" in text
    [edge_b] = [line for line in lines if line.startswith("edge-b")]
    assert "cp-two" in edge_b
    [base] = [line for line in lines if line.startswith("base ")]
    assert "eu-west 2/2" in base
    assert any(line.endswith("[cp-one]") and "listener public refused" in line for line in lines)
    assert "different config versions" not in text
    assert not healthy([one, two])  # a refused listener on one replica


def test_replicas_serving_different_versions_are_named_and_not_healthy() -> None:
    one = replica("cp-one", "v1", [node("edge-a", True, [])], [route("base", True, 1, 1)])
    two = replica("cp-two", "v2", [node("edge-b", True, [])], [route("base", True, 1, 1)])
    assert healthy([one]) and healthy([two])
    assert not healthy([one, two])
    assert "replicas serve different config versions: v1 (cp-one); v2 (cp-two)" in render_replicas([one, two])


def test_a_replica_that_cannot_be_asked_is_named_and_the_others_still_shown() -> None:
    one = replica("cp-one", "v1", [node("edge-a", True, [])], [route("base", True, 1, 1)])
    down = Replica("10.0.0.9:18001", error="cannot read http://10.0.0.9:18001/status: refused")
    text = render_replicas([one, down])
    assert "control plane at 10.0.0.9:18001: cannot read" in text and "edge-a" in text
    assert not healthy([one, down])


def test_replicas_resolve_to_every_address_of_the_name_once() -> None:
    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("controlplane-replicas", 18001)
        return ["10.1.0.4", "10.1.0.5", "fd00::7"]

    addresses = admin_addresses(["10.1.0.4:18001"], ["controlplane-replicas:18001"], resolve)
    assert addresses == ["10.1.0.4:18001", "10.1.0.5:18001", "[fd00::7]:18001"]


def test_a_replicas_name_that_does_not_resolve_or_has_no_port_is_refused() -> None:
    def unknown(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(ValueError, match="--replicas 'nowhere:18001': nowhere does not resolve"):
        admin_addresses([], ["nowhere:18001"], unknown)
    with pytest.raises(ValueError, match="--replicas 'controlplane' is not HOST:PORT"):
        admin_addresses([], ["controlplane"], unknown)
