"""`pavilion status --admin HOST:PORT`: the control plane's /status, per route and per proxy, as
tables (or `--json`). Exit status: 0 when every route is programmed on every proxy, 2 when something
is pending or refused, 1 when the control plane cannot be asked."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from pavilion.text_table import table

TIMEOUT = 10.0
_TYPES = (("Cluster", "CDS"), ("ClusterLoadAssignment", "EDS"), ("Listener", "LDS"), ("RouteConfiguration", "RDS"),
          ("VirtualHost", "VHDS"))  # VHDS: Delta proxies only


def _get(admin: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=TIMEOUT) as response:
        return dict(json.loads(response.read()))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def render(status: dict[str, Any], routes: dict[str, Any]) -> str:
    lines = [f"control plane {status['control_plane']}  config version {status['version']}  "
             f"generation {status['generation']}  ready {_yes(status['ready'])}  synced {_yes(status['synced'])}"]
    if status.get("last_rejected"):
        rejected = status["last_rejected"]
        lines.append(f"last edit {rejected['result']} at {rejected['at']}:")
        lines += [f"  {error}" for error in rejected["errors"]]
    rows = [["ROUTE", "LISTENER", "SOURCE", "ACCEPTED", "RESOLVED", "PROGRAMMED", "PROXIES ACKED"]]
    notes: list[str] = []
    for route in routes["routes"]:
        proxies = ", ".join(f"{region or '-'} {n['acked']}/{n['of']}" for region, n in route["proxies"].items())
        rows.append([route["name"], route["listener"] or "-", route["source"], _yes(route["accepted"]),
                     _yes(route["resolved_refs"]), _yes(route["programmed"]), proxies or "no proxy"])
        for error in route.get("errors", []):
            notes.append(f"route {route['name']}: last edit refused: {error}")
        if "rejected" in route:
            refused = route["rejected"]
            notes.append(f"{route['source']}: route {route['name']} refused by Envoy in {refused['region']}, "
                         f"serving its {refused['serving']}: {' '.join(refused['errors'])}")
    lines += ["", table(rows)]
    for name, refused in routes.get("refused_listeners", {}).items():
        notes.append(f"{refused['source']}: listener {name} refused by Envoy in {refused['region']}, "
                     f"serving its {refused['serving']}: {' '.join(refused['errors'])}")
    for kind, refused in routes.get("unattributed_nacks", {}).items():
        notes.append(f"{kind} version {refused['version']} refused in {refused['region']} "
                     f"(no route entry explains it): {refused['error']}")
    if notes:
        lines += ["", *notes]
    nacks: list[str] = []
    rows = [["PROXY", "XDS", "REGION", "ROLE", "SYNCED", "LAST SPOKE", *(short for _, short in _TYPES), "POLICY"]]
    envoy_types = {kind for kind, _ in _TYPES}
    for node in status["nodes"]:
        acked = [(node["types"].get(kind, {}).get("acked_version") or "-") for kind, _ in _TYPES]
        # Pavilion's own services (ext_authz, ratelimit) take their tenants or rules as a type of their own.
        policies = [f"{kind} {state.get('acked_version') or '-'}" for kind, state in sorted(node["types"].items())
                    if kind not in envoy_types]
        acked.append(", ".join(policies) or "-")
        # "no (waits for Listener, RouteConfiguration)": a proxy mid-handshake says what it lacks.
        pending = node.get("pending") or []
        synced = _yes(node["synced"]) + (f" (waits for {', '.join(pending)})" if pending else "")
        rows.append([node["node_id"], node["kind"], node["region"] or "-", node["role"] or "-",
                     synced, node["last_seen"], *acked])
        for kind, short in _TYPES:
            nack = node["types"].get(kind, {}).get("last_nack")
            if nack:
                nacks.append(f"{node['node_id']} refused {short} {nack['version']}: {nack['error']}")
    lines += ["", table(rows) if len(rows) > 1 else "no proxy connected", *nacks]
    return "\n".join(lines) + "\n"


def run_status(args: argparse.Namespace) -> int:
    try:
        status = _get(args.admin, "/status")
        routes = _get(args.admin, "/status/routes")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"status: cannot read http://{args.admin}/status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps({"status": status, "routes": routes}, indent=2) + "\n")
    else:
        sys.stdout.write(render(status, routes))
    healthy = (status["synced"] and all(route["programmed"] for route in routes["routes"])
               and not routes.get("refused_listeners"))
    return 0 if healthy else 2
