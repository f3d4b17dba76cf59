"""`websocket: true` → the route's RouteAction enables the `websocket` upgrade; the listener's HTTP
connection manager then lists the upgrade type, disabled, so that its own config says upgrades are off
but on the routes that enable them.

Envoy upgrades a request when its route enables the type, or when the connection manager lists the type
enabled and the route does not disable it. A connection manager that lists no type refuses every
upgrade (403), as one listing it disabled does on every other route: a listener without a websocket
route lists nothing (tests/integration/test_websocket_envoy.py shows both answers).

Over HTTP/2 and HTTP/3 the same listener allows extended CONNECT (extended_connect) and the route adds the
Sec-WebSocket-Key such a request lacks (route_key_headers); the rules above decide it as they decide an
HTTP/1.1 upgrade (tests/integration/test_websocket_h2_envoy.py).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Config, Listener
from controlplane.translate._protos import boolean

__all__ = ["SEC_WEBSOCKET_KEY", "WEBSOCKET", "extended_connect", "listener_upgrades", "route_key_headers",
           "route_upgrades", "serves_websockets"]

WEBSOCKET = "websocket"
# RFC 6455's sample nonce (16 bytes, base64). See route_key_headers.
SEC_WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def route_upgrades() -> list[rc.RouteAction.UpgradeConfig]:
    return [rc.RouteAction.UpgradeConfig(upgrade_type=WEBSOCKET, enabled=boolean(True))]


def route_key_headers() -> list[base_pb2.HeaderValueOption]:
    """A `Sec-WebSocket-Key` for the service where the request has none. An extended CONNECT (HTTP/2, HTTP/3)
    carries no key (RFC 8441 drops the key/accept exchange) and Envoy 1.40 adds none when it turns it into an
    HTTP/1.1 upgrade (envoyproxy/envoy#8547), so RFC 6455 services answer 400. The key only proves to the
    client that the server speaks websocket; Envoy, the client of this hop, does not check the accept, so
    a fixed one serves. An HTTP/1.1 client's own key is kept."""
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="sec-websocket-key", value=SEC_WEBSOCKET_KEY),
                                       append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT)]


def serves_websockets(item: Listener, config: Config) -> bool:
    """Whether a route of `item` has `websocket` (its ext_authz filter then also sends the headers of a
    token offered as a subprotocol, _policy.ext_authz_filter)."""
    return any(r.websocket for r in config.routes if r.listener == item.name)


def listener_upgrades(item: Listener, config: Config) -> list[hcm_pb2.HttpConnectionManager.UpgradeConfig]:
    if not serves_websockets(item, config):
        return []
    return [hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type=WEBSOCKET, enabled=boolean(False))]


def extended_connect(item: Listener, config: Config) -> bool:
    """Whether `item`'s HTTP/2 (and, on its `-h3` twin, HTTP/3) advertises extended CONNECT (RFC 8441/9220),
    the way browsers open a websocket on an HTTP/2 or HTTP/3 connection: where a route has `websocket`.

    Envoy's codec turns a CONNECT with `:protocol websocket` into the HTTP/1.1 form (GET, `Upgrade:
    websocket`) before the filters and the route see it, so the upgrade_configs above decide it as they
    decide an HTTP/1.1 upgrade, ext_authz and the rate limits see it as that GET, and the service gets an
    HTTP/1.1 upgrade whatever the client spoke. Off elsewhere: the listener's SETTINGS stay as they were."""
    return serves_websockets(item, config)
