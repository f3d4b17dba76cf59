"""`websocket: true` → the route's RouteAction enables the `websocket` upgrade; the listener's HTTP
connection manager then names the upgrade type, disabled, so every other route refuses it (403).

Envoy allows an upgrade when the connection manager lists its type and the route does not disable it,
or when the connection manager disables it and the route enables it; a type the connection manager
does not list is refused on every route. A listener without a websocket route lists none.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Config, Listener
from controlplane.translate._protos import boolean

__all__ = ["WEBSOCKET", "listener_upgrades", "route_upgrades"]

WEBSOCKET = "websocket"


def route_upgrades() -> list[rc.RouteAction.UpgradeConfig]:
    return [rc.RouteAction.UpgradeConfig(upgrade_type=WEBSOCKET, enabled=boolean(True))]


def listener_upgrades(item: Listener, config: Config) -> list[hcm_pb2.HttpConnectionManager.UpgradeConfig]:
    if not any(r.websocket for r in config.routes if r.listener == item.name):
        return []
    return [hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type=WEBSOCKET, enabled=boolean(False))]
