"""`websocket: true` over HTTP/2 and HTTP/3: extended CONNECT (RFC 8441, RFC 9220) allowed on the connection
manager of a listener with a websocket route and of its `-h3` twin, nowhere else, and a Sec-WebSocket-Key
added where the request has none on websocket routes only."""

from __future__ import annotations

import base64
from dataclasses import replace

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Backend, Config, ListenerTls, Match, Route
from controlplane.translate._websocket import SEC_WEBSOCKET_KEY
from tests.controlplane.translate.sample import sample_config, translated
from tests.controlplane.translate.test_mirrors_websocket import CHAT, OTHER, PLAIN, config, manager, routes_of

CHAIN = b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"


def test_extended_connect_is_allowed_on_the_listener_with_a_websocket_route_only() -> None:
    cfg = config(CHAT, PLAIN, OTHER)
    assert manager(cfg, "public").http2_protocol_options.allow_connect
    assert not manager(cfg, "internal").http2_protocol_options.allow_connect
    assert not manager(config(PLAIN, OTHER), "public").http2_protocol_options.allow_connect


def test_a_listener_without_a_websocket_route_is_unchanged() -> None:
    without = translated(listener_pb2.Listener, config(PLAIN, OTHER), "eu-west")
    with_chat = translated(listener_pb2.Listener, config(CHAT, PLAIN, OTHER), "eu-west")
    (before,) = [x for x in without if x.name == "internal"]
    (after,) = [x for x in with_chat if x.name == "internal"]
    assert before.SerializeToString(deterministic=True) == after.SerializeToString(deterministic=True)


def test_a_websocket_route_adds_a_key_where_the_request_has_none() -> None:
    routes = routes_of(config(CHAT, PLAIN, OTHER))
    (option,) = routes["chat"].request_headers_to_add
    assert (option.header.key, option.header.value) == ("sec-websocket-key", SEC_WEBSOCKET_KEY)
    # An HTTP/1.1 client's own key is kept: its 101's Sec-WebSocket-Accept answers that one.
    assert option.append_action == base_pb2.HeaderValueOption.ADD_IF_ABSENT
    assert len(base64.b64decode(SEC_WEBSOCKET_KEY, validate=True)) == 16  # what RFC 6455 services check
    assert not routes["plain"].request_headers_to_add


def _h3_manager(websocket: bool) -> hcm_pb2.HttpConnectionManager:
    base = sample_config()
    listeners = tuple(replace(x, tls=ListenerTls(CHAIN, KEY, http3=True)) if x.name == "public" else x
                      for x in base.listeners)
    chat = Route("chat", "public", Match(prefix="/chat"), (Backend("accounts"),), websocket=websocket)
    cfg: Config = replace(base, listeners=listeners, routes=(*base.routes, chat))
    (twin,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == "public-h3"]
    result = hcm_pb2.HttpConnectionManager()
    assert twin.filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def test_the_http3_twin_allows_extended_connect_where_the_tcp_listener_does() -> None:
    assert _h3_manager(websocket=True).http3_protocol_options.allow_extended_connect
    assert not _h3_manager(websocket=False).http3_protocol_options.allow_extended_connect
    assert not _h3_manager(websocket=True).HasField("http2_protocol_options")
