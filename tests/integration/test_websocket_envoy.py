"""WebSockets with the real control plane, Envoy and `pavilion extauthz`: a `websocket: true` route carries
a conversation both ways, past its route timeout and through a quiet spell; the upgrade request is checked
like any request (no token: 401, never upgraded; a local rate limit counts upgrades); the same upgrade on
a route without `websocket`, or on a listener without a websocket route, gets Envoy's 403 and never
reaches the service, while plain requests to both kinds of route are answered as usual."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import request as http_request
from tests.integration.gateway_procs import running_gateway, start_xds_service
from tests.integration.recording_upstream import seen, start_recording_upstream
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
ROUTE_TIMEOUT = 1.0  # the websocket routes' `timeout`; conversations outlast it

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
  - {{name: internal, address: 127.0.0.1, port: {internal}}}
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
  - name: chat
    listener: public
    match: {{prefix: /chat}}
    service: chat
    websocket: true
    timeout: {timeout}s
  - name: lobby
    listener: public
    match: {{prefix: /lobby}}
    service: chat
    auth: none
    websocket: true
    timeout: {timeout}s
  - name: limited
    listener: public
    match: {{prefix: /limited}}
    service: chat
    auth: none
    websocket: true
    local_rate_limit: {{unit: hour, requests: 2}}
  - name: plain
    listener: public
    match: {{prefix: /plain}}
    service: chat
    auth: none
  - name: internal
    listener: internal
    match: {{prefix: /}}
    service: chat
    auth: none
"""


@dataclass
class Stack:
    port: int
    internal: int
    chat: int

    def upgrades_seen(self, prefix: str) -> int:
        """Upgrade requests the chat service received under `prefix`."""
        return len([r for r in seen(self.chat) if r["path"].startswith(prefix)
                    and r["headers"].get("Upgrade", "").lower() == "websocket"])


def token_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ACME.token('ES256')}"}


async def _converse(url: str, messages: list[str], headers: dict[str, str], pause: float) -> list[str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as socket:
        answers = []
        for index, message in enumerate(messages):
            if index == len(messages) // 2:
                await asyncio.sleep(pause)  # a quiet spell longer than the route timeout
            await socket.send_str(message)
            answer = await asyncio.wait_for(socket.receive(), 5)
            assert answer.type == aiohttp.WSMsgType.TEXT, answer
            answers.append(str(answer.data))
        return answers


def converse(url: str, messages: list[str], headers: dict[str, str] | None = None, pause: float = 0.0) -> list[str]:
    return asyncio.run(_converse(url, messages, headers or {}, pause))


async def _handshake_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    """101 when the upgrade went through, else the HTTP status Envoy or the service answered."""
    return asyncio.run(_handshake_status(url, headers or {}))


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The whole stack with an Envoy on State of the World ADS, then one on Delta ADS (virtual hosts over
    VHDS): the route actions and the listener's upgrade list arrive either way."""
    routes = tmp_path_factory.mktemp("routes")
    port, internal, extauthz_port = free_port(), free_port(), free_port()
    upstreams = {"chat": start_recording_upstream("chat")}
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, internal=internal, chat=upstreams["chat"][1], extauthz=extauthz_port, timeout=ROUTE_TIMEOUT,
        issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams, delta=request.param) as gateway:
        # What the control plane serves, Envoy itself accepts (`envoy --mode validate`).
        assert check_with_envoy(load_config(routes), ENVOY) == []
        gateway.envoys[0].proc.wait_port(internal)
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-websocket")
        try:
            # ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token.
            deadline = time.monotonic() + 20
            while http_request(f"http://127.0.0.1:{port}/chat", headers=token_headers()).status != 200:
                assert time.monotonic() < deadline, "no token accepted"
                time.sleep(0.1)
            yield Stack(port, internal, upstreams["chat"][1])
        finally:
            extauthz.stop()


def test_a_conversation_outlasts_the_route_timeout(stack: Stack) -> None:
    messages = [f"message {n}" for n in range(6)]
    started = time.monotonic()
    answers = converse(f"http://127.0.0.1:{stack.port}/lobby/room-1", messages, pause=ROUTE_TIMEOUT * 1.5)
    assert answers == [f"chat: {m}" for m in messages]
    # Envoy 1.40 times the upgrade until its 101 only; the socket lived well past `timeout`.
    assert time.monotonic() - started > ROUTE_TIMEOUT * 1.5


def test_the_upgrade_needs_a_token_where_the_route_asks_for_one(stack: Stack) -> None:
    before = stack.upgrades_seen("/chat")
    assert handshake_status(f"http://127.0.0.1:{stack.port}/chat/room-2") == 401
    bad = {"authorization": "Bearer not-a-token"}
    assert handshake_status(f"http://127.0.0.1:{stack.port}/chat/room-2", bad) == 401
    assert stack.upgrades_seen("/chat") == before  # refused by ext_authz, never upgraded
    answers = converse(f"http://127.0.0.1:{stack.port}/chat/room-2", ["hello", "bye"], token_headers())
    assert answers == ["chat: hello", "chat: bye"]
    assert stack.upgrades_seen("/chat") == before + 1


def test_a_route_without_websocket_refuses_the_upgrade_with_403(stack: Stack) -> None:
    for url in (f"http://127.0.0.1:{stack.port}/plain/room-3", f"http://127.0.0.1:{stack.internal}/room-3"):
        assert handshake_status(url) == 403
    assert stack.upgrades_seen("/plain") == stack.upgrades_seen("/room-3") == 0
    # Plain requests on those routes, and on a websocket route, are served as usual.
    for url in (f"http://127.0.0.1:{stack.port}/plain/x", f"http://127.0.0.1:{stack.internal}/x",
                f"http://127.0.0.1:{stack.port}/lobby/x"):
        reply = http_request(url)
        assert (reply.status, reply.served_by) == (200, "chat"), url


def test_a_local_rate_limit_counts_upgrades(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.port}/limited/room-4"
    assert [handshake_status(url) for _ in range(3)] == [101, 101, 429]
    assert stack.upgrades_seen("/limited") == 2
