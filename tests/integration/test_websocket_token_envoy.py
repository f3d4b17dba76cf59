"""A browser's websocket token as a subprotocol, with the real control plane, Envoy and `pavilion extauthz`:
an upgrade offering `base64url.bearer.authorization.pavilion.dev.<token>` beside `chat.v1` opens on a
`websocket: true` route that asks for a token, over HTTP/1.1 and HTTP/2 extended CONNECT; the service sees
no token in any header and chooses among the real subprotocols. The same header on a plain request, or on a
route without `websocket`, is no credential: 401."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from extauthz.websocket_token import TOKEN_PREFIX
from tests.integration.gateway_procs import request as http_request
from tests.integration.gateway_procs import running_gateway, start_xds_service
from tests.integration.h2_websocket import H2WebsocketClient
from tests.integration.recording_upstream import SUBPROTOCOL, seen, start_recording_upstream
from tests.integration.test_websocket_envoy import ACME, handshake_status, token_headers
from tests.procs import free_port

pytestmark = pytest.mark.integration

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: chat
    endpoints: [{{address: 127.0.0.1:{chat}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - {{name: chat, listener: public, match: {{prefix: /chat}}, service: chat, websocket: true}}
  - {{name: orders, listener: public, match: {{prefix: /orders}}, service: chat}}
"""


@dataclass
class Stack:
    port: int
    chat: int

    def upgrades_seen(self, prefix: str) -> list[dict[str, str]]:
        """The headers of the upgrade requests the chat service received under `prefix`."""
        return [r["headers"] for r in seen(self.chat) if r["path"].startswith(prefix)
                and r["headers"].get("Upgrade", "").lower() == "websocket"]


def entry(token: str) -> str:
    """The subprotocol a browser offers: `new WebSocket(url, [entry(token), "chat.v1"])`."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    routes = tmp_path_factory.mktemp("routes")
    port, extauthz_port = free_port(), free_port()
    upstreams = {"chat": start_recording_upstream("chat")}
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, chat=upstreams["chat"][1], extauthz=extauthz_port, issuer=ACME.issuer, audience=ACME.audience,
        jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-websocket-token")
        try:
            # ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token.
            deadline = time.monotonic() + 20
            while http_request(f"http://127.0.0.1:{port}/chat", headers=token_headers()).status != 200:
                assert time.monotonic() < deadline, "no token accepted"
                time.sleep(0.1)
            yield Stack(port, upstreams["chat"][1])
        finally:
            extauthz.stop()


async def _open(url: str, protocols: tuple[str, ...]) -> tuple[str | None, str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=protocols) as socket:
        await socket.send_str("hello")
        answer = await asyncio.wait_for(socket.receive(), 5)
        return socket.protocol, str(answer.data)


def open_with(url: str, protocols: tuple[str, ...]) -> tuple[str | None, str]:
    """(the subprotocol the service chose, its answer to "hello") of a websocket offering `protocols`."""
    return asyncio.run(_open(url, protocols))


async def _status(url: str, protocols: tuple[str, ...], headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, protocols=protocols, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def status_with(url: str, protocols: tuple[str, ...], headers: dict[str, str] | None = None) -> int:
    return asyncio.run(_status(url, protocols, headers or {}))


def assert_no_token(headers: dict[str, Any], token: str) -> None:
    for name, value in headers.items():
        assert token not in str(value) and TOKEN_PREFIX not in str(value), name
    assert "Authorization" not in headers


def test_a_token_offered_as_a_subprotocol_opens_the_websocket(stack: Stack) -> None:
    token = ACME.token("ES256", sub="browser-user")
    before = len(stack.upgrades_seen("/chat"))
    url = f"http://127.0.0.1:{stack.port}/chat/room-1"
    assert open_with(url, (entry(token), SUBPROTOCOL)) == (SUBPROTOCOL, "chat: hello")
    (headers,) = stack.upgrades_seen("/chat")[before:]
    assert_no_token(headers, token)
    assert headers["Sec-WebSocket-Protocol"] == SUBPROTOCOL  # the real one is left for the service to choose
    assert headers["x-pavilion-subject"] == "browser-user"


def test_a_token_offered_alone_leaves_no_subprotocol_header(stack: Stack) -> None:
    token = ACME.token("ES256")
    before = len(stack.upgrades_seen("/chat"))
    assert open_with(f"http://127.0.0.1:{stack.port}/chat/room-2", (entry(token),)) == (None, "chat: hello")
    (headers,) = stack.upgrades_seen("/chat")[before:]
    assert_no_token(headers, token)
    assert "Sec-WebSocket-Protocol" not in headers


def test_the_upgrade_is_refused_without_a_usable_token(stack: Stack) -> None:
    before = len(stack.upgrades_seen("/chat"))
    url = f"http://127.0.0.1:{stack.port}/chat/room-3"
    token = ACME.token("ES256")
    assert status_with(url, (SUBPROTOCOL,)) == 401
    assert status_with(url, (TOKEN_PREFIX + "not*base64", SUBPROTOCOL)) == 401
    assert status_with(url, (entry("not-a-token"), SUBPROTOCOL)) == 401
    assert status_with(url, (entry(token), entry(token))) == 400  # two credentials
    assert status_with(url, (entry(token),), {"authorization": "Basic dXNlcjpwYXNz"}) == 400
    assert len(stack.upgrades_seen("/chat")) == before  # none reached the service


def test_the_subprotocol_is_no_credential_outside_a_websocket_upgrade(stack: Stack) -> None:
    offered = {"sec-websocket-protocol": f"{entry(ACME.token('ES256'))}, {SUBPROTOCOL}"}
    # A plain request to the websocket route, and to a route without `websocket`: no Authorization, 401.
    for path in ("/chat/room-4", "/orders/1"):
        assert http_request(f"http://127.0.0.1:{stack.port}{path}", headers=offered).status == 401, path
    # An upgrade to a route without `websocket` never gets as far as ext_authz: Envoy's 403.
    assert handshake_status(f"http://127.0.0.1:{stack.port}/orders/2", offered) == 403


def test_a_token_offered_as_a_subprotocol_over_http2(stack: Stack) -> None:
    token = ACME.token("ES256")
    before = len(stack.upgrades_seen("/chat"))
    with H2WebsocketClient(stack.port) as client:
        assert client.connect("/chat/room-5", {"sec-websocket-protocol": SUBPROTOCOL})[1] == 401
        stream, status = client.connect("/chat/room-5", {"sec-websocket-protocol": f"{entry(token)}, {SUBPROTOCOL}"})
        assert status == 200
        client.send_text(stream, "over h2")
        assert client.receive_text(stream) == "chat: over h2"
    (headers,) = stack.upgrades_seen("/chat")[before:]
    assert_no_token(headers, token)
    assert headers["Sec-WebSocket-Protocol"] == SUBPROTOCOL
