"""Is a local server up yet? Readiness probes that a TCP self-connect cannot fool.

A probe polls a port before anything listens on it. When that port lies in the kernel's ephemeral
range, which is where ports picked by binding port 0 come from, the kernel now and then gives the
probe that very port as its source. The SYN then meets itself and the socket is connected to itself
(TCP simultaneous open): a port probe reports "open", and an HTTP probe reads back its own request
(`BadStatusLine: GET /readyz HTTP/1.1`). Both probes here treat such a socket as "not up yet".
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse


def _connected_to_itself(sock: socket.socket) -> bool:
    return bool(sock.getsockname() == sock.getpeername())


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Something other than this probe accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return not _connected_to_itself(sock)
    except OSError:
        return False


def http_ok(url: str, timeout: float = 0.5) -> bool:
    """A GET of the http:// `url` is answered with a 2xx status."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        connection.connect()
        if connection.sock is None or _connected_to_itself(connection.sock):
            return False
        connection.request("GET", parts.path or "/")
        return 200 <= connection.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
