"""A route's `max_request_body` → Envoy's buffer filter, on for that route only.

The filter sits in the chain of a listener with such a route, `disabled` there, so every other route
streams its bodies as before; a route's BufferPerRoute turns it on with its own limit (Envoy's
route-based filter chain: a filter disabled in the chain runs where a route gives it a config). Envoy
then holds the whole body before the request goes upstream and answers 413 past the limit, at once
when a Content-Length says so. It sits after ext_authz and the rate limiters, just before the
compressors and the router: a request refused there never makes Envoy hold its body.
"""

from __future__ import annotations

from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Config, Listener
from controlplane.config.request_body import MAX_BODY_BYTES
from controlplane.translate._protos import route_enabled_filter, uint32

__all__ = ["BUFFER_FILTER", "body_limit", "buffer_filters"]

BUFFER_FILTER = "envoy.filters.http.buffer"


def buffer_filters(item: Listener, config: Config) -> list[hcm_pb2.HttpFilter]:
    """The buffer filter, disabled, when a route of `item` has `max_request_body`; else none."""
    if not any(r.max_request_body is not None for r in config.routes if r.listener == item.name):
        return []
    return [route_enabled_filter(BUFFER_FILTER, buffer_pb2.Buffer(max_request_bytes=uint32(MAX_BODY_BYTES)))]


def body_limit(max_bytes: int) -> buffer_pb2.BufferPerRoute:
    return buffer_pb2.BufferPerRoute(buffer=buffer_pb2.Buffer(max_request_bytes=uint32(max_bytes)))
