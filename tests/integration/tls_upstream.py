"""An HTTPS upstream for integration tests: answers every GET with JSON naming itself, the SNI it was
sent and the subject of the client certificate it was shown (empty when none).

    python -m tests.integration.tls_upstream --port P --name N --cert C --key K [--client-ca CA] [--grpc]

With --client-ca a client certificate signed by that CA is required. Handshakes run in the request
thread, so a client that fails one holds up nobody else. With --grpc it is a gRPC server over TLS
instead (Pavilion's GrpcServer: grpc.health.v1.Health only), which speaks HTTP/2 negotiated by ALPN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.x509.oid import NameOID

from pavilion.grpc_server import GrpcServer, ServerTLS
from tests.procs import Proc, free_port

__all__ = ["start_tls_upstream"]

_SNI: dict[int, str] = {}  # id of the TLS socket → the server name it was sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TlsServer

    def do_GET(self) -> None:
        connection = cast(ssl.SSLSocket, self.connection)  # finish_request hands over the TLS socket
        der = connection.getpeercert(binary_form=True)
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME) if der else []
        body = json.dumps({"name": self.server.name, "path": self.path, "sni": _SNI.get(id(connection), ""),
                           "client": str(names[0].value) if names else ""}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, name: str, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.name = name
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            print(f"handshake failed: {exc}", flush=True)
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            _SNI.pop(id(tls), None)
            tls.close()


def _remember_sni(sock: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
    _SNI[id(sock)] = server_name or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca")
    parser.add_argument("--grpc", action="store_true")
    args = parser.parse_args(argv)
    if args.grpc:
        ca = Path(args.client_ca).read_bytes() if args.client_ca else None
        asyncio.run(_serve_grpc(args.port, ServerTLS(Path(args.cert).read_bytes(), Path(args.key).read_bytes(), ca)))
        return 0
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.sni_callback = _remember_sni
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    server = _TlsServer(args.port, args.name, context)
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()
    return 0


async def _serve_grpc(port: int, tls: ServerTLS) -> None:
    server = GrpcServer("127.0.0.1", port, register=lambda _server: None, service_names=[], tls=tls)
    await server.start()
    print(f"grpc over TLS on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def start_tls_upstream(name: str, cert: Path, key: Path, client_ca: Path | None = None, *,
                       grpc: bool = False) -> tuple[Proc, int]:
    """The HTTPS (or, with `grpc`, gRPC over TLS) upstream on a random loopback port, listening."""
    port = free_port()
    extra = ["--client-ca", str(client_ca)] if client_ca is not None else []
    extra += ["--grpc"] if grpc else []
    proc = Proc([sys.executable, "-m", "tests.integration.tls_upstream", "--port", str(port), "--name", name,
                 "--cert", str(cert), "--key", str(key), *extra], name=f"tls-upstream-{name}",
                cwd=str(Path(__file__).resolve().parents[2]))
    try:
        proc.wait_port(port, 15)
    except BaseException:
        proc.stop()
        raise
    return proc, port


if __name__ == "__main__":
    sys.exit(main())
