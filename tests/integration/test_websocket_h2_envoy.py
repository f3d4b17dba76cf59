"""WebSockets over HTTP/2 (RFC 8441 extended CONNECT) and HTTP/3 (RFC 9220) with the real control plane, Envoy
and `pavilion extauthz`: a listener with a `websocket: true` route advertises SETTINGS_ENABLE_CONNECT_PROTOCOL
over h2c, TLS (ALPN h2) and QUIC; a CONNECT with `:protocol websocket` opens a conversation there and reaches
the service as an HTTP/1.1 upgrade (with the Sec-WebSocket-Key an RFC 6455 service needs); the same CONNECT
needs a token where the route asks for one, is counted by a local rate limit, and is refused with a 403 on a
route without `websocket`. A listener without a websocket route does not advertise extended CONNECT."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aioquic.asyncio.client import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import Ca, make_ca, write_pair
from tests.integration.gateway_procs import request as http_request
from tests.integration.gateway_procs import running_gateway, start_xds_service
from tests.integration.h2_websocket import H2WebsocketClient, H3WebsocketClient
from tests.integration.recording_upstream import seen, start_recording_upstream
from tests.integration.test_websocket_envoy import ACME, token_headers
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
  - {{name: internal, address: 127.0.0.1, port: {internal}}}
  - name: secure
    address: 127.0.0.1
    port: {secure}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem, http3: true}}
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
  - {{name: lobby, listener: public, match: {{prefix: /lobby}}, service: chat, auth: none, websocket: true}}
  - name: limited
    listener: public
    match: {{prefix: /limited}}
    service: chat
    auth: none
    websocket: true
    local_rate_limit: {{unit: hour, requests: 2}}
  - {{name: plain, listener: public, match: {{prefix: /plain}}, service: chat, auth: none}}
  - {{name: internal, listener: internal, match: {{prefix: /}}, service: chat, auth: none}}
  - {{name: secure, listener: secure, match: {{prefix: /}}, service: chat, auth: none, websocket: true}}
  - {{name: secure-plain, listener: secure, match: {{prefix: /plain}}, service: chat, auth: none}}
"""


@dataclass
class Stack:
    port: int
    internal: int
    secure: int
    chat: int
    ca: Ca

    def upgrades_seen(self, prefix: str) -> list[dict[str, str]]:
        """The headers of the upgrade requests the chat service received under `prefix`."""
        return [r["headers"] for r in seen(self.chat) if r["path"].startswith(prefix)
                and r["headers"].get("Upgrade", "").lower() == "websocket"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    routes, certs = tmp_path_factory.mktemp("routes"), tmp_path_factory.mktemp("certs")
    ca = make_ca("Edge CA")
    write_pair(certs, *ca.issue("localhost"))
    port, internal, secure, extauthz_port = free_port(), free_port(), free_port(), free_port()
    upstreams = {"chat": start_recording_upstream("chat")}
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, internal=internal, secure=secure, certs=certs, chat=upstreams["chat"][1],
        extauthz=extauthz_port, issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams) as gateway:
        assert check_with_envoy(load_config(routes), ENVOY) == []
        gateway.envoys[0].proc.wait_port(internal)
        gateway.envoys[0].proc.wait_port(secure)
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-websocket-h2")
        try:
            # ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token.
            deadline = time.monotonic() + 20
            while http_request(f"http://127.0.0.1:{port}/chat", headers=token_headers()).status != 200:
                assert time.monotonic() < deadline, "no token accepted"
                time.sleep(0.1)
            yield Stack(port, internal, secure, upstreams["chat"][1], ca)
        finally:
            extauthz.stop()


def test_only_a_listener_with_a_websocket_route_advertises_extended_connect(stack: Stack) -> None:
    with H2WebsocketClient(stack.port) as client:
        assert client.extended_connect
    with H2WebsocketClient(stack.internal) as client:
        assert not client.extended_connect


def test_a_websocket_over_http2_reaches_the_service_as_an_http1_upgrade(stack: Stack) -> None:
    before = len(stack.upgrades_seen("/lobby"))
    with H2WebsocketClient(stack.port) as client:
        first, status = client.connect("/lobby/room-1")
        assert status == 200
        # A browser opens its websockets to one origin as streams of one connection.
        second, status = client.connect("/lobby/room-2")
        assert status == 200
        for message in ("hello", "again"):
            client.send_text(first, message)
            assert client.receive_text(first) == f"chat: {message}"
        client.send_text(second, "other room")
        assert client.receive_text(second) == "chat: other room"
    upgrades = stack.upgrades_seen("/lobby")[before:]
    assert len(upgrades) == 2
    for headers in upgrades:
        # The service saw an HTTP/1.1 upgrade, with the key RFC 6455 asks for.
        assert headers["Connection"].lower() == "upgrade"
        assert headers["Sec-WebSocket-Version"] == "13"
        assert headers["Sec-WebSocket-Key"]


def test_a_websocket_over_http2_on_tls(stack: Stack) -> None:
    context = ssl.create_default_context(cadata=stack.ca.pem.decode())
    with H2WebsocketClient(stack.secure, tls=context) as client:
        assert client.extended_connect
        stream, status = client.connect("/room-5")
        assert status == 200
        client.send_text(stream, "over tls")
        assert client.receive_text(stream) == "chat: over tls"


def test_extended_connect_needs_a_token_where_the_route_asks_for_one(stack: Stack) -> None:
    before = len(stack.upgrades_seen("/chat"))
    with H2WebsocketClient(stack.port) as client:
        assert client.connect("/chat/room-2")[1] == 401
    with H2WebsocketClient(stack.port) as client:
        assert client.connect("/chat/room-2", {"authorization": "Bearer not-a-token"})[1] == 401
    assert len(stack.upgrades_seen("/chat")) == before  # refused by ext_authz, never upgraded
    with H2WebsocketClient(stack.port) as client:
        stream, status = client.connect("/chat/room-2", token_headers())
        assert status == 200
        client.send_text(stream, "hello")
        assert client.receive_text(stream) == "chat: hello"
    assert len(stack.upgrades_seen("/chat")) == before + 1


def test_extended_connect_on_a_route_without_websocket_is_refused_with_403(stack: Stack) -> None:
    with H2WebsocketClient(stack.port) as client:
        assert client.connect("/plain/room-3")[1] == 403
    assert stack.upgrades_seen("/plain") == []


def test_a_local_rate_limit_counts_extended_connects(stack: Stack) -> None:
    statuses = []
    for _ in range(3):
        with H2WebsocketClient(stack.port) as client:
            statuses.append(client.connect("/limited/room-4")[1])
    assert statuses == [200, 200, 429]
    assert len(stack.upgrades_seen("/limited")) == 2


async def _h3_conversation(stack: Stack, path: str, messages: list[str]) -> tuple[bool, int, list[str]]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    configuration.load_verify_locations(cadata=stack.ca.pem)
    async with connect("127.0.0.1", stack.secure, configuration=configuration,
                       create_protocol=H3WebsocketClient) as client:
        assert isinstance(client, H3WebsocketClient)
        await client.wait_settings()
        stream, status = await client.open(f"localhost:{stack.secure}", path)
        answers = []
        for message in messages if status == 200 else []:
            await client.send_text(stream, message)
            answers.append(await client.receive_text(stream))
        return client.extended_connect, status, answers


def h3_conversation(stack: Stack, path: str, messages: list[str]) -> tuple[bool, int, list[str]]:
    """(extended CONNECT advertised, `:status`, the answers) of a websocket over HTTP/3 to `path`."""
    # The UDP listener comes up with the TCP one, but nothing waits for it: retry until it answers.
    deadline = time.monotonic() + 15
    while True:
        try:
            return asyncio.run(asyncio.wait_for(_h3_conversation(stack, path, messages), 3))
        except (TimeoutError, ConnectionError):
            assert time.monotonic() < deadline, "no HTTP/3 answer"
            time.sleep(0.2)


def test_a_websocket_over_http3(stack: Stack) -> None:
    assert h3_conversation(stack, "/room-6", ["over quic", "twice"]) == (True, 200, ["chat: over quic", "chat: twice"])
    # Over HTTP/3 too, a route without `websocket` refuses it.
    assert h3_conversation(stack, "/plain/room-7", ["unheard"]) == (True, 403, [])
    assert stack.upgrades_seen("/plain") == []
