"""`pavilion status` text: a proxy that is not synced says which types it still waits for."""

from __future__ import annotations

from typing import Any

from controlplane.status_cli import render


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
