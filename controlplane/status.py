"""What the control plane reports about itself: /status JSON and its Prometheus metrics.

/status answers the operator's questions after an edit: which version is served, was my last change
rejected and why, and does every connected Envoy hold everything its group is served: each type with
resources for its protocol subscribed, and every type it subscribed acked at the version served now.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane.cache import SnapshotCache
from controlplane.resources import short_type
from controlplane.server.stream import StreamState, iso_time
from pavilion.config_status import set_config_info
from pavilion.metrics import NAMESPACE, Counter, Gauge, Histogram

CONFIG_INFO = Gauge("controlplane_config_info", "The config version being served (value 1).", ["version"],
                    namespace=NAMESPACE)
CONFIG_GENERATION = Gauge("controlplane_config_generation", "Configs installed since start.",
                          namespace=NAMESPACE)
RELOADS = Counter("controlplane_reloads", "Config loads by result: applied, unchanged, rejected, failed.",
                  ["result"], namespace=NAMESPACE)
RELOAD_SECONDS = Histogram("controlplane_reload_seconds", "Load, validate and translate time of a config.",
                           namespace=NAMESPACE, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CONNECTED = Gauge("xds_connected_proxies", "Open xDS streams by node group.", ["region", "role"],
                  namespace=NAMESPACE)
PUSHES = Counter("xds_pushes", "DiscoveryResponses sent, by resource type.", ["type"], namespace=NAMESPACE)
PUSH_BYTES = Counter("xds_push_bytes", "Bytes of DiscoveryResponses sent, by resource type.", ["type"],
                     namespace=NAMESPACE)
ACKS = Counter("xds_acks", "Responses a proxy accepted, by resource type.", ["type"], namespace=NAMESPACE)
NACKS = Counter("xds_nacks", "Responses a proxy rejected, by resource type.", ["type"], namespace=NAMESPACE)


class StatusBoard:
    """Live streams plus the history of config loads, rendered as /status."""

    def __init__(self, cache: SnapshotCache, *, identifier: str, config_path: str = "") -> None:
        self.cache = cache
        self.identifier = identifier
        # Unique per process, unlike `identifier` (a host name by default): a replica asking its peers
        # (controlplane/rollout.py) tells its own answer by it.
        self.instance = uuid.uuid4().hex
        self.config_path = config_path
        self.started_at = time.time()
        self.streams: dict[int, StreamState] = {}
        self.applied: dict[str, Any] | None = None
        self.rejected: dict[str, Any] | None = None
        self.reloads = {"applied": 0, "unchanged": 0, "rejected": 0, "failed": 0}
        self.last_result = ""  # of the latest load: the directory on disk is served unless rejected or failed
        # Listener entries Envoy refused and what is served instead (set by the app to the fallback's view).
        self.refused_listeners: Callable[[], dict[str, Any]] = dict
        # Served certificates expiring within 30 days, soonest first (set by the app to CertificateExpiry's).
        self.expiring_certificates: Callable[[], list[dict[str, Any]]] = list
        # The staged rollout under way, or None (set by the app to RolloutDriver's).
        self.rollout: Callable[[], dict[str, Any] | None] = lambda: None

    # streams

    def stream_joined(self, stream: StreamState) -> None:
        """Called once the stream's node (and so its group) is known."""
        self.streams[stream.stream_id] = stream
        if stream.group is not None:
            CONNECTED.labels(stream.group.region, stream.group.role).inc()

    def stream_left(self, stream: StreamState) -> None:
        if self.streams.pop(stream.stream_id, None) is not None and stream.group is not None:
            CONNECTED.labels(stream.group.region, stream.group.role).dec()

    # config loads

    def record_applied(self, version: str, seconds: float, *, changed: bool) -> None:
        result = "applied" if changed else "unchanged"
        self.last_result = result
        RELOADS.labels(result).inc()
        self.reloads[result] += 1
        RELOAD_SECONDS.observe(seconds)
        if changed:
            if self.applied is not None:
                CONFIG_INFO.remove(self.applied["version"])
            CONFIG_INFO.labels(version).set(1)
            # The name ext_authz and ratelimit report too: one version across the three parts.
            set_config_info(version, self.applied["version"] if self.applied is not None else None)
            CONFIG_GENERATION.set(self.cache.generation)
            self.applied = {"version": version, "at": iso_time(time.time()), "seconds": round(seconds, 4)}

    def record_rejected(self, errors: list[str], *, result: str = "rejected") -> None:
        self.last_result = result
        RELOADS.labels(result).inc()
        self.reloads[result] = self.reloads.get(result, 0) + 1
        self.rejected = {"at": iso_time(time.time()), "result": result, "errors": errors}

    # rendering

    def render(self) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for group, snapshot in sorted(self.cache.groups().items()):
            groups[str(group)] = {
                "region": group.region, "role": group.role, "version": snapshot.version,
                "resources": {short_type(url): len(snap.resources) for url, snap in snapshot.types.items()},
                "types": {short_type(url): version for url, version in snapshot.versions().items()},
            }
        nodes = [stream.status(self.cache.current(stream.group) if stream.group else None)
                 for stream in sorted(self.streams.values(), key=lambda s: s.stream_id)]
        return {
            "control_plane": self.identifier,
            "instance": self.instance,
            "config": self.config_path,
            "ready": self.cache.loaded,
            "version": self.cache.config_version or None,
            "generation": self.cache.generation,
            "applied": self.applied,
            "last_rejected": self.rejected,
            "refused_listeners": self.refused_listeners(),
            "certificates_expiring": self.expiring_certificates(),
            "rollout": self.rollout(),
            "reloads": dict(self.reloads),
            "groups": groups,
            "nodes": nodes,
            "synced": all(node["synced"] for node in nodes),
        }

    async def handle_status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.render(), dumps=json_dumps)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/status", self.handle_status)]


def json_dumps(value: Any) -> str:
    """The admin API's JSON: indented, one trailing newline."""
    return json.dumps(value, indent=2, sort_keys=False) + "\n"
