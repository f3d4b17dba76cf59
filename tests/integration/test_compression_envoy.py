"""Response compression with the real control plane and Envoy (State of the World, then Delta ADS): a
client that accepts gzip gets gzip that decompresses to the service's body, one that accepts br gets
Brotli, the server's preference wins a tie and the client's q-values win over it, a client that sends
no Accept-Encoding gets the body as it was; a body under min_bytes, a type not listed, a route with
`compression: off` and a body the service encoded itself are left alone; a streamed body (no
Content-Length) is compressed whatever its size, and a `direct_response` too; `Vary: Accept-Encoding`
is set wherever the answer depends on it; a local rate limit's 429 is never compressed (the
compressors sit after it), a websocket route of a compressing listener still converses; and
`envoy --mode validate` accepts the translated config."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.integration.gateway_procs import running_gateway
from tests.integration.payload_upstream import payload, start_payload_upstream
from tests.integration.recording_upstream import start_recording_upstream
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

HAS_BROTLI = importlib.util.find_spec("brotli") is not None
STATUS_BODY = "pavilion edge status: every region serving. " * 60  # 2700 bytes, under the 4096 allowed

CONFIG = """regions: [eu-west]
listeners:
  - name: edge
    address: 127.0.0.1
    port: {edge}
    compression: {{}}
  - name: zedge
    address: 127.0.0.1
    port: {zedge}
    compression: {{algorithms: [zstd, br, gzip], min_bytes: 100, content_types: [application/json]}}
  - name: tiny
    address: 127.0.0.1
    port: {tiny}
    compression: {{algorithms: [gzip], min_bytes: 1}}
services:
  - name: payload
    endpoints: [{{address: 127.0.0.1:{payload}, region: eu-west}}]
  - name: chat
    endpoints: [{{address: 127.0.0.1:{chat}, region: eu-west}}]
routes:
  - name: data
    listener: edge
    match: {{prefix: /data}}
    service: payload
  - name: downloads
    listener: edge
    match: {{prefix: /downloads}}
    service: payload
    compression: off
  - name: status
    listener: edge
    match: {{path: /status}}
    direct_response: {{status: 200, body: "{status}"}}
  - name: chat
    listener: edge
    match: {{prefix: /chat}}
    service: chat
    websocket: true
  - name: limited
    listener: tiny
    match: {{prefix: /limited}}
    service: payload
    local_rate_limit: {{unit: hour, requests: 1}}
  - name: tiny-answer
    listener: tiny
    match: {{path: /answer}}
    direct_response: {{status: 200, body: "ok"}}
  - name: zdata
    listener: zedge
    match: {{prefix: /}}
    service: payload
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes

    @property
    def encoding(self) -> str:
        return self.headers.get("content-encoding", "identity")

    @property
    def varies_on_encoding(self) -> bool:
        return "accept-encoding" in [v.strip().lower() for v in self.headers.get("vary", "").split(",")]


@dataclass
class Setup:
    edge: int
    zedge: int
    tiny: int

    def get(self, path: str, accept: str | None = None, *, port: int | None = None) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", port or self.edge, timeout=5)
        try:
            connection.request("GET", path, headers={"accept-encoding": accept} if accept is not None else {})
            response = connection.getresponse()
            headers: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            return Answer(response.status, headers, response.read())
        finally:
            connection.close()


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def setup(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Setup]:
    routes = tmp_path_factory.mktemp("routes")
    edge, zedge, tiny = free_port(), free_port(), free_port()
    upstreams = {"payload": start_payload_upstream()}
    try:
        upstreams["chat"] = start_recording_upstream("chat")
        (routes / "gateway.yaml").write_text(CONFIG.format(
            edge=edge, zedge=zedge, tiny=tiny, payload=upstreams["payload"][1], chat=upstreams["chat"][1],
            status=STATUS_BODY))
        # What the control plane serves, Envoy itself accepts (`envoy --mode validate`).
        assert check_with_envoy(load_config(routes), ENVOY) == []
    except BaseException:
        for proc, _port in upstreams.values():
            proc.stop()
        raise
    with running_gateway(Path(routes), edge, upstreams, delta=request.param) as gateway:
        gateway.envoys[0].proc.wait_port(zedge)
        gateway.envoys[0].proc.wait_port(tiny)
        yield Setup(edge, zedge, tiny)


def test_gzip_decompresses_to_the_services_body(setup: Setup) -> None:
    original = payload(20_000)
    got = setup.get("/data?bytes=20000", "gzip")
    assert got.status == 200
    assert got.encoding == "gzip"
    assert got.varies_on_encoding
    assert "content-length" not in got.headers or int(got.headers["content-length"]) == len(got.body)
    assert len(got.body) < len(original) // 3
    assert gzip.decompress(got.body) == original
    # The service still learns what the client accepts (it may encode by itself, see below).
    assert got.headers["x-upstream-accept-encoding"] == "gzip"


def test_br_when_the_client_accepts_brotli(setup: Setup) -> None:
    original = payload(20_000)
    got = setup.get("/data?bytes=20000", "br")
    assert got.encoding == "br"
    assert got.varies_on_encoding
    assert len(got.body) < len(original) // 3
    if HAS_BROTLI:
        import brotli

        assert brotli.decompress(got.body) == original
    else:  # no brotli package here: the body is at least not the original, nor gzip
        assert got.body != original and not got.body.startswith(b"\x1f\x8b")


def test_the_servers_preference_wins_a_tie_and_q_values_win_over_it(setup: Setup) -> None:
    assert setup.get("/data?bytes=5000", "gzip, br").encoding == "br"
    assert setup.get("/data?bytes=5000", "br, gzip").encoding == "br"
    assert setup.get("/data?bytes=5000", "gzip;q=1.0, br;q=0.5").encoding == "gzip"
    assert setup.get("/data?bytes=5000", "br;q=0, gzip").encoding == "gzip"
    # A browser's usual header: zstd is not offered on this listener, br is preferred.
    assert setup.get("/data?bytes=5000", "gzip, deflate, br, zstd").encoding == "br"
    on_zedge = setup.get("/x?bytes=5000", "gzip, deflate, br, zstd", port=setup.zedge)
    assert on_zedge.encoding == "zstd"
    assert on_zedge.body.startswith(b"\x28\xb5\x2f\xfd")  # the zstd frame's magic number
    assert setup.get("/x?bytes=5000", "*", port=setup.zedge).encoding == "zstd"
    assert setup.get("/x?bytes=5000", "gzip", port=setup.zedge).encoding == "gzip"
    # Envoy puts one filter first in a tie (choose_first): between the second and third, the client's order.
    assert setup.get("/x?bytes=5000", "gzip, br", port=setup.zedge).encoding == "gzip"
    assert setup.get("/x?bytes=5000", "br, gzip", port=setup.zedge).encoding == "br"


def test_no_accept_encoding_gets_the_body_as_it_was(setup: Setup) -> None:
    original = payload(20_000)
    for accept in (None, "identity", "deflate"):
        got = setup.get("/data?bytes=20000", accept)
        assert got.encoding == "identity", accept
        assert got.body == original
        assert int(got.headers["content-length"]) == len(original)
        # It could have been compressed for another client: a cache in front must keep them apart.
        assert got.varies_on_encoding


def test_a_body_under_min_bytes_is_sent_as_it_is(setup: Setup) -> None:
    small = setup.get("/data?bytes=1000", "gzip, br")
    assert small.encoding == "identity" and small.body == payload(1000)
    assert setup.get("/data?bytes=1024", "gzip").encoding == "gzip"  # the default min_bytes, 1024, itself
    # That listener's min_bytes is 100.
    assert setup.get("/x?bytes=99", "gzip", port=setup.zedge).encoding == "identity"
    assert setup.get("/x?bytes=100", "gzip", port=setup.zedge).encoding == "gzip"


def test_only_listed_content_types_are_compressed(setup: Setup) -> None:
    # text/plain is in the default list; the zedge listener lists application/json only.
    assert setup.get("/data?bytes=5000&type=text", "gzip").encoding == "gzip"
    text = setup.get("/x?bytes=5000&type=text", "gzip", port=setup.zedge)
    assert text.encoding == "identity" and text.body == payload(5000, "text")
    binary = setup.get("/data?bytes=5000&type=binary", "gzip")
    assert binary.encoding == "identity" and binary.body == payload(5000, "binary")


def test_a_route_with_compression_off_is_never_compressed(setup: Setup) -> None:
    original = payload(20_000)
    got = setup.get("/downloads/report.json?bytes=20000", "gzip, br")
    assert got.encoding == "identity"
    assert got.body == original
    assert not got.varies_on_encoding  # the answer is the same whatever the client accepts
    # The same service through a compressing route of the same listener is compressed.
    assert setup.get("/data/report.json?bytes=20000", "gzip, br").encoding == "br"


def test_a_body_the_service_encoded_is_not_encoded_again(setup: Setup) -> None:
    got = setup.get("/data?bytes=20000&encoded=gzip", "br, gzip")
    assert got.encoding == "gzip"
    assert gzip.decompress(got.body) == payload(20_000)


def test_a_direct_response_is_compressed_too(setup: Setup) -> None:
    got = setup.get("/status", "gzip")
    assert got.status == 200 and got.encoding == "gzip"
    assert gzip.decompress(got.body) == STATUS_BODY.encode()
    plain = setup.get("/status")
    assert plain.encoding == "identity" and plain.body == STATUS_BODY.encode()


def test_a_streamed_body_is_compressed_whatever_its_size(setup: Setup) -> None:
    # No Content-Length (chunked): Envoy cannot know the size, and compresses even a body under min_bytes.
    for size in (20_000, 500):
        got = setup.get(f"/data?bytes={size}&stream=1", "gzip")
        assert got.encoding == "gzip", size
        assert gzip.decompress(got.body) == payload(size)


async def _converse(url: str, messages: list[str]) -> list[str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, headers={"accept-encoding": "gzip, br"}) as socket:
        answers = []
        for message in messages:
            await socket.send_str(message)
            answer = await asyncio.wait_for(socket.receive(), 5)
            assert answer.type == aiohttp.WSMsgType.TEXT, answer
            answers.append(str(answer.data))
        return answers


def test_a_websocket_on_a_compressing_listener_is_left_alone(setup: Setup) -> None:
    # The 101 has no body length: the compressors leave it, and the frames after it, alone.
    answers = asyncio.run(_converse(f"ws://127.0.0.1:{setup.edge}/chat", ["hello", "x" * 5000]))
    assert answers == ["chat: hello", "chat: " + "x" * 5000]


def test_envoy_validate_accepts_each_algorithm_alone_and_every_option(tmp_path: Path) -> None:
    listeners = "\n".join(
        f"  - {{name: {name}, address: 127.0.0.1, port: {port}, compression: {spec}}}"
        for name, port, spec in (
            ("gz", 10081, "{algorithms: [gzip]}"), ("brotli", 10082, "{algorithms: [br], min_bytes: 1}"),
            ("zs", 10083, "{algorithms: [zstd], min_bytes: 16777216, content_types: [text/csv]}"),
            ("all", 10084, "{algorithms: [gzip, zstd, br]}")))
    routes = "\n".join(
        f"  - {{name: {name}-off, listener: {name}, match: {{prefix: /}}, service: payload, compression: off}}"
        for name in ("gz", "brotli", "zs", "all"))
    (tmp_path / "gateway.yaml").write_text(
        f"regions: [eu-west]\nlisteners:\n{listeners}\nservices:\n  - name: payload\n"
        f"    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]\nroutes:\n{routes}\n")
    config = load_config(tmp_path)
    assert [item.compression.algorithms for item in config.listeners if item.compression] == [
        ("gzip",), ("br",), ("zstd",), ("gzip", "zstd", "br")]
    assert check_with_envoy(config, ENVOY) == []


def test_refusals_of_earlier_filters_are_not_compressed(setup: Setup) -> None:
    # min_bytes 1 on that listener: only where the compressors sit keeps a short answer uncompressed.
    assert setup.get("/answer", "gzip", port=setup.tiny).encoding == "gzip"  # the router's own answer
    first = setup.get("/limited?bytes=200", "gzip", port=setup.tiny)
    assert first.status == 200 and first.encoding == "gzip"
    refused = setup.get("/limited?bytes=200", "gzip", port=setup.tiny)
    assert refused.status == 429
    assert refused.encoding == "identity" and refused.body == b"local_rate_limited"
