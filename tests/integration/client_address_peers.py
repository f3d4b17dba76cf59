"""What a client behind a load balancer looks like to Envoy, for tests/integration/test_client_address_envoy.py:
PROXY protocol v1 and v2 headers, one HTTP/1.1 request over a raw (or TLS) connection, and a fake ext_authz
that records the source address of every CheckRequest and allows it."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import struct
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import status_pb2

__all__ = ["Answer", "RecordingAuthz", "ask", "proxy_v1", "proxy_v2"]

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(client: str, port: int = 40000) -> bytes:
    """A PROXY protocol v1 header claiming `client` (IPv4) connected to 192.0.2.1:443."""
    return f"PROXY TCP4 {client} 192.0.2.1 {port} 443\r\n".encode()


def proxy_v2(client: str, port: int = 40000) -> bytes:
    """A PROXY protocol v2 header (binary, PROXY command, TCP over IPv4) claiming `client`."""
    addresses = (ipaddress.IPv4Address(client).packed + ipaddress.IPv4Address("192.0.2.1").packed
                 + struct.pack("!HH", port, 443))
    return _V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


@dataclass
class Answer:
    """Envoy's answer, or status None when it closed the connection without one."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def upstream_headers(self) -> dict[str, str]:
        """The headers the echo upstream received (lower-cased names)."""
        return {k.lower(): v for k, v in json.loads(self.body)["headers"].items()}


def ask(port: int, path: str = "/", *, preface: bytes = b"", source: str = "127.0.0.1",
        headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None, method: str = "GET") -> Answer:
    """One request on a new connection from `source` to 127.0.0.1:`port`, `preface` (a PROXY header) first,
    then TLS when `tls` is given."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    conn: socket.socket = raw
    try:
        raw.sendall(preface)
        if tls is not None:
            conn = tls.wrap_socket(raw, server_hostname="localhost")
        lines = [f"{method} {path} HTTP/1.1", "Host: api.example.com", "Connection: close",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(conn)
        try:
            response.begin()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            return Answer(None)
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read().decode(errors="replace"))
    finally:
        conn.close()


class RecordingAuthz(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """ext_authz that allows every request and keeps (path, source address) of each check."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{port}")

    def Check(self, request: external_auth_pb2.CheckRequest,
              context: Any) -> external_auth_pb2.CheckResponse:
        del context
        attributes = request.attributes
        with self._lock:
            self.seen.append((attributes.request.http.path, attributes.source.address.socket_address.address))
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0),
                                               ok_response=external_auth_pb2.OkHttpResponse())

    def sources(self, path: str) -> list[str]:
        with self._lock:
            return [address for seen_path, address in self.seen if seen_path == path]

    def start(self) -> RecordingAuthz:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)
