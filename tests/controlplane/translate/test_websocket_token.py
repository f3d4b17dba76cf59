"""A browser websocket's token as a subprotocol (extauthz/websocket_token.py) in the translation: a
`websocket: true` route tells ext_authz so (`websocket: "1"`), and the ext_authz filter of a listener with a
websocket route sends `upgrade` and `sec-websocket-protocol`; every other listener's filter, and every other
route's extensions, are as they were."""

from __future__ import annotations

from dataclasses import replace

from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

from controlplane.config.model import Config, ExtAuthzSettings, Route, RouteAuth
from controlplane.translate._policy import EXT_AUTHZ_FILTER, ext_authz_per_route
from extauthz.websocket_token import PROTOCOL_HEADER, WEBSOCKET_EXTENSION
from tests.controlplane.translate.test_mirrors_websocket import CHAT, OTHER, PLAIN, config, manager, routes_of


def protected(*routes: Route) -> Config:
    return replace(config(*routes), extauthz=ExtAuthzSettings("accounts"))


def sent_headers(cfg: Config, listener: str) -> list[str]:
    (authz_filter,) = [f for f in manager(cfg, listener).http_filters if f.name == EXT_AUTHZ_FILTER]
    authz = ext_authz_pb2.ExtAuthz()
    assert authz_filter.typed_config.Unpack(authz)
    return [p.exact for p in authz.allowed_headers.patterns]


def extensions(cfg: Config, name: str, listener: str = "public") -> dict[str, str]:
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    assert routes_of(cfg, listener)[name].typed_per_filter_config[EXT_AUTHZ_FILTER].Unpack(per_route)
    return dict(per_route.check_settings.context_extensions)


def test_a_listener_with_a_websocket_route_sends_the_upgrade_headers_to_ext_authz() -> None:
    cfg = protected(CHAT, PLAIN, OTHER)
    assert sent_headers(cfg, "public") == ["authorization", "dpop", "upgrade", PROTOCOL_HEADER]
    assert sent_headers(cfg, "internal") == ["authorization", "dpop"]
    assert sent_headers(protected(PLAIN, OTHER), "public") == ["authorization", "dpop"]


def test_a_listener_without_a_websocket_route_is_unchanged() -> None:
    without = manager(protected(PLAIN, OTHER), "internal")
    with_chat = manager(protected(CHAT, PLAIN, OTHER), "internal")
    assert without.SerializeToString(deterministic=True) == with_chat.SerializeToString(deterministic=True)


def test_the_websocket_route_alone_carries_the_extension() -> None:
    cfg = protected(CHAT, PLAIN, OTHER)
    assert extensions(cfg, "chat") == {"route": "chat", WEBSOCKET_EXTENSION: "1"}
    assert extensions(cfg, "plain") == {"route": "plain"}
    assert extensions(cfg, "other", "internal") == {"route": "other"}


def test_a_public_websocket_route_is_not_checked_at_all() -> None:
    lobby = replace(CHAT, auth=RouteAuth(public=True))
    assert ext_authz_per_route(lobby).disabled
