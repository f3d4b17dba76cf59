"""`pavilion envoy-bootstrap`: an Envoy bootstrap that points an edge proxy at the control plane.

The template lives in `envoy/edge.yaml`; values are substituted as JSON strings, which YAML reads
as plain strings, so a node id with odd characters cannot change the document's structure.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import string
import sys
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


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) into its parts; ValueError names what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--xds-address {address!r} is not HOST:PORT, like 127.0.0.1:18000")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render_bootstrap(*, node_id: str, region: str, xds_address: str, role: str = "edge", admin_port: int = 9901,
                     cluster: str = "", delta: bool = False, max_connections: int = 50000,
                     template: str = "edge.yaml") -> str:
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
    text = template_path(template).read_text(encoding="utf-8")
    return string.Template(text).substitute(
        {key: json.dumps(value) for key, value in values.items()} | {k: str(v) for k, v in numbers.items()})


def run_bootstrap(args: argparse.Namespace) -> int:
    try:
        text = render_bootstrap(node_id=args.node_id, region=args.region, role=args.role,
                                xds_address=args.xds_address, admin_port=args.admin_port,
                                delta=args.delta)
    except ValueError as exc:
        print(f"envoy-bootstrap: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
