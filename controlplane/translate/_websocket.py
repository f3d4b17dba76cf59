"""`websocket: true` → the route's RouteAction enables the `websocket` upgrade; the listener's HTTP
connection manager then lists the upgrade type, disabled, so that its own config says upgrades are off
but on the routes that enable them.

Envoy upgrades a request when its route enables the type, or when the connection manager lists the type
enabled and the route does not disable it. A connection manager that lists no type refuses every
upgrade (403), as one listing it disabled does on every other route: a listener without a websocket
route lists nothing (tests/integration/test_websocket_envoy.py shows both answers).
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
