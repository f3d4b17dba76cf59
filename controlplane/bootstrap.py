"""`pavilion envoy-bootstrap`: an Envoy bootstrap that points an edge proxy at the control plane.

The template lives in `envoy/edge.yaml`; values are substituted as JSON strings, which YAML reads
as plain strings, so a node id with odd characters cannot change the document's structure. The xDS
cluster's TLS (`--xds-ca`) is substituted the same way, as one JSON (flow YAML) mapping, and names
its files: Envoy reads them itself, so no key is copied into the bootstrap.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import string
import sys
from dataclasses import dataclass
from pathlib import Path

# The templates live in the repository's envoy/ folder; a built wheel installs the same files as
# data files under <prefix>/share/pavilion/envoy (pyproject's [tool.setuptools.data-files]).
TEMPLATE_DIRS = (Path(__file__).resolve().parent.parent / "envoy", Path(sys.prefix) / "share" / "pavilion" / "envoy")


def template_path(name: str, directories: tuple[Path, ...] = TEMPLATE_DIRS) -> Path:
    """The first `name` found in the template directories; FileNotFoundError lists where it looked."""
    for directory in directories:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"Envoy template {name!r} not found in {', '.join(map(str, directories))}")


def split_address(address: str, option: str = "--xds-address", example: str = "127.0.0.1:18000") -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) into its parts; ValueError names the option and what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option} {address!r} is not HOST:PORT, like {example}")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class XdsTls:
    """Envoy's side of TLS to the control plane; paths as Envoy will see them (not read here)."""

    ca: str  # verifies the control plane's certificate
    client_cert: str = ""  # presented for mTLS, with client_key
    client_key: str = ""
    server_name: str = ""  # SNI and the name checked in its certificate; default: the xDS host

    def __post_init__(self) -> None:
        if not self.ca:
            raise ValueError("--xds-ca must name the CA file that verifies the control plane")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("--xds-client-cert and --xds-client-key go together: give both or neither")


def _transport_socket(tls: XdsTls, host: str) -> str:
    """The xds_cluster's `transport_socket:` line(s), ending where the template's next key begins."""
    name = tls.server_name or host
    san_type = "IP_ADDRESS" if _is_ip(name) else "DNS"
    context: dict[str, object] = {
        "validation_context": {
            "trusted_ca": {"filename": tls.ca},
            # Without it Envoy would accept any certificate the CA signed, a client's included.
            "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": name}}],
        },
    }
    if tls.client_cert:
        context["tls_certificates"] = [{"certificate_chain": {"filename": tls.client_cert},
                                        "private_key": {"filename": tls.client_key}}]
    config: dict[str, object] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}
    if not _is_ip(name):  # SNI is a host name by definition (RFC 6066)
        config["sni"] = name
    config["common_tls_context"] = context
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": config}
    # JSON is flow YAML; continuation lines indented deeper than the key keep it inside the cluster.
    return "transport_socket: " + json.dumps(socket, indent=2).replace("\n", "\n" + " " * 8) + "\n      "


def render_bootstrap(*, node_id: str, region: str, xds_address: str, role: str = "edge", admin_port: int = 9901,
                     cluster: str = "", delta: bool = False, max_connections: int = 50000,
                     template: str = "edge.yaml", xds_tls: XdsTls | None = None) -> str:
    host, port = split_address(xds_address)
    values = {
        "node_id": node_id,
        "node_cluster": cluster or f"pavilion-{role}-{region}",
        "region": region,
        "role": role,
        "api_type": "DELTA_GRPC" if delta else "GRPC",
        "xds_discovery": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "xds_host": host,
    }
    numbers = {"xds_port": port, "admin_port": admin_port, "max_connections": max_connections}
    blocks = {"xds_transport_socket": _transport_socket(xds_tls, host) if xds_tls is not None else ""}
    text = template_path(template).read_text(encoding="utf-8")
    return string.Template(text).substitute(
        {key: json.dumps(value) for key, value in values.items()} | {k: str(v) for k, v in numbers.items()}
        | blocks)


def _xds_tls(args: argparse.Namespace) -> XdsTls | None:
    if not args.xds_ca:
        given = [flag for flag, value in (("--xds-client-cert", args.xds_client_cert),
                                          ("--xds-client-key", args.xds_client_key),
                                          ("--xds-server-name", args.xds_server_name)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} need --xds-ca, the CA that verifies the control plane")
        return None
    return XdsTls(args.xds_ca, args.xds_client_cert or "", args.xds_client_key or "", args.xds_server_name or "")


def run_bootstrap(args: argparse.Namespace) -> int:
    try:
        text = render_bootstrap(node_id=args.node_id, region=args.region, role=args.role,
                                xds_address=args.xds_address, admin_port=args.admin_port,
                                delta=args.delta, xds_tls=_xds_tls(args))
    except ValueError as exc:
        print(f"envoy-bootstrap: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
