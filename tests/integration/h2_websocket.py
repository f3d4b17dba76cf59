"""A minimal websocket client over HTTP/2 (RFC 8441 extended CONNECT) for integration tests, as a browser on
an HTTP/2 connection opens one: it reads the server's SETTINGS, opens each websocket as a stream with
`:method CONNECT` and `:protocol websocket`, and sends masked websocket frames in DATA frames. Plaintext
(h2c, prior knowledge) or TLS with ALPN h2."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import hyperframe.frame
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection, Setting
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.events import QuicEvent
from h2.settings import SettingCodes

__all__ = ["H2WebsocketClient", "H3WebsocketClient", "masked_text_frame"]

_FRAME_HEADER = 9


def masked_text_frame(text: str) -> bytes:
    """One final websocket text frame as a client sends it (masked, RFC 6455 5.3)."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126, "short messages only"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass
class _Stream:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False


class H2WebsocketClient:
    """One HTTP/2 connection to 127.0.0.1:`port`; `settings` holds the server's first SETTINGS."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, server_name: str = "localhost",
                 timeout: float = 5.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            raw = tls.wrap_socket(raw, server_hostname=server_name)
            assert raw.selected_alpn_protocol() == "h2"
        self._socket = raw
        self.authority = f"{server_name}:{port}"
        self.scheme = "https" if tls is not None else "http"
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._streams: dict[int, _Stream] = {}
        self._buffer = b""
        self.goaway = False
        self.closed = False
        self.settings: dict[int, int] = {}
        self._h2.initiate_connection()
        self._flush()
        self._pump(lambda: bool(self.settings))

    def __enter__(self) -> H2WebsocketClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._socket.close()

    @property
    def extended_connect(self) -> bool:
        return self.settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 1

    def connect(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, int]:
        """(stream id, `:status`) of an extended CONNECT for a websocket at `path`: 200 when it opened."""
        stream_id = self._h2.get_next_available_stream_id()
        self._streams[stream_id] = _Stream()
        self._h2.send_headers(stream_id, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", self.scheme), (":path", path),
            (":authority", self.authority), ("sec-websocket-version", "13"), *(headers or {}).items()])
        self._flush()
        stream = self._streams[stream_id]
        self._pump(lambda: ":status" in stream.headers or self.closed)
        return stream_id, int(stream.headers.get(":status", "0"))

    def send_text(self, stream_id: int, text: str) -> None:
        self._h2.send_data(stream_id, masked_text_frame(text))
        self._flush()

    def receive_text(self, stream_id: int) -> str:
        """The next websocket text frame on the stream (the server's frames are not masked)."""
        stream = self._streams[stream_id]
        self._pump(lambda: _frame_length(stream.data) is not None or stream.ended or self.closed)
        return _take_text_frame(stream)

    def _flush(self) -> None:
        self._socket.sendall(self._h2.data_to_send())

    def _pump(self, done: Callable[[], bool]) -> None:
        while not done():
            data = self._socket.recv(65535)
            if not data:
                self.closed = True
                return
            self._receive(data)
            self._flush()

    def _receive(self, data: bytes) -> None:
        # Envoy answers a refused upgrade with a graceful GOAWAY (every stream still served) before the
        # answer; the h2 package closes its side on any GOAWAY and would drop that answer, so it never sees it.
        self._buffer += data
        kept = b""
        while len(self._buffer) >= _FRAME_HEADER:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(self._buffer[:_FRAME_HEADER]))
            if len(self._buffer) < _FRAME_HEADER + length:
                break
            raw, self._buffer = self._buffer[:_FRAME_HEADER + length], self._buffer[_FRAME_HEADER + length:]
            if isinstance(frame, hyperframe.frame.GoAwayFrame):
                self.goaway = True
            else:
                kept += raw
        for event in self._h2.receive_data(kept):
            self._event(event)

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.update({int(code): change.new_value for code, change in event.changed_settings.items()})
        elif isinstance(event, h2.events.ResponseReceived):
            self._streams[event.stream_id].headers.update((str(k), str(v)) for k, v in event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._streams[event.stream_id].data += event.data
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            self._streams[event.stream_id].ended = True


def _take_text_frame(stream: _Stream) -> str:
    size = _frame_length(stream.data)
    assert size is not None, f"stream ended without a frame: {bytes(stream.data)!r}"
    header, length = size
    frame = bytes(stream.data[:header + length])
    del stream.data[:header + length]
    assert frame[0] == 0x81, f"not a final text frame: {frame!r}"
    return frame[header:].decode()


def _frame_length(data: bytearray) -> tuple[int, int] | None:
    """(header size, payload size) of the unmasked websocket frame at the start of `data`, once it is whole."""
    if len(data) < 2:
        return None
    length, header = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, header = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, header = int.from_bytes(data[2:10], "big"), 10
    return (header, length) if len(data) >= header + length else None


class H3WebsocketClient(QuicConnectionProtocol):
    """The same over HTTP/3 (RFC 9220): one QUIC connection, each websocket a request stream (aioquic)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._streams: dict[int, _Stream] = {}
        self._changed = asyncio.Event()

    @property
    def extended_connect(self) -> bool:
        return (self._h3.received_settings or {}).get(Setting.ENABLE_CONNECT_PROTOCOL, 0) == 1

    async def wait_settings(self) -> None:
        while self._h3.received_settings is None:
            await self._wait()

    async def open(self, authority: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, int]:
        stream_id = self._quic.get_next_available_stream_id()
        stream = self._streams[stream_id] = _Stream()
        self._h3.send_headers(stream_id, [
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
            (b":path", path.encode()), (b":authority", authority.encode()), (b"sec-websocket-version", b"13"),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items())])
        self.transmit()
        while ":status" not in stream.headers and not stream.ended:
            await self._wait()
        return stream_id, int(stream.headers.get(":status", "0"))

    async def send_text(self, stream_id: int, text: str) -> None:
        self._h3.send_data(stream_id, masked_text_frame(text), end_stream=False)
        self.transmit()

    async def receive_text(self, stream_id: int) -> str:
        stream = self._streams[stream_id]
        while _frame_length(stream.data) is None and not stream.ended:
            await self._wait()
        return _take_text_frame(stream)

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self._h3.handle_event(event):
            stream = self._streams.get(getattr(h3_event, "stream_id", -1))
            if isinstance(h3_event, HeadersReceived) and stream is not None:
                stream.headers.update((k.decode(), v.decode()) for k, v in h3_event.headers)
            elif isinstance(h3_event, DataReceived) and stream is not None:
                stream.data += h3_event.data
            if stream is not None and getattr(h3_event, "stream_ended", False):
                stream.ended = True
        self._changed.set()
