"""`pavilion status --admin HOST:PORT`: the control plane's /status, per route and per proxy, as
tables (or `--json`). Exit status: 0 when every route is programmed on every proxy, 2 when something
is pending or refused, 1 when the control plane cannot be asked.

Replicas: each Envoy holds one stream to one control plane replica, and each replica reports only the
proxies connected to it. Asked through a load-balanced address (a Kubernetes Service, a port-forward),
one replica answers, and a proxy stuck on another one goes unseen. So `--admin` may be given once per
replica, and `--replicas HOST:PORT` asks every address HOST resolves to (a headless Service's name
resolves to each ready pod). The answers are merged: one row per route (programmed only when every
replica says so, proxies summed per region), every proxy with the replica it speaks to, each refusal
with the replica that saw it, and a line when replicas serve different config versions (mid-rollout,
or one of them refused an edit the others took), which is not healthy either. A replica that cannot
be asked is named, the others are still shown, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from controlplane.bootstrap import split_address
from pavilion.durations import parse_duration
from pavilion.text_table import table

TIMEOUT = 10.0
POLL_SECONDS = 1.0  # between two looks with --wait
_TYPES = (("Cluster", "CDS"), ("ClusterLoadAssignment", "EDS"), ("Listener", "LDS"), ("RouteConfiguration", "RDS"),
          ("VirtualHost", "VHDS"))  # VHDS: Delta proxies only
Resolve = Callable[[str, int], list[str]]


@dataclass
class Replica:
    """One control plane asked: its admin address and its two answers, or why it could not be asked."""

    admin: str
    status: dict[str, Any] | None = None
    routes: dict[str, Any] | None = None
    error: str | None = None

    @property
    def identifier(self) -> str:
        return str(self.status["control_plane"]) if self.status else self.admin


def name_replicas(replicas: list[Replica]) -> dict[int, str]:
    """id(replica) -> how the merged view names it: its identifier, with its admin address when two
    replicas share one (the default identifier is the host name)."""
    counts: dict[str, int] = {}
    for replica in replicas:
        counts[replica.identifier] = counts.get(replica.identifier, 0) + 1
    return {id(replica): replica.identifier if counts[replica.identifier] == 1
            else f"{replica.identifier} ({replica.admin})" for replica in replicas}


def _get(admin: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=TIMEOUT) as response:
        return dict(json.loads(response.read()))


def ask(admin: str) -> Replica:
    try:
        return Replica(admin, _get(admin, "/status"), _get(admin, "/status/routes"))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return Replica(admin, error=f"cannot read http://{admin}/status: {exc}")


def resolve_all(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, once each."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def admin_addresses(admins: list[str], replicas: list[str], resolve: Resolve = resolve_all) -> list[str]:
    """The admin addresses to ask: each `--admin` as given, and each address of each `--replicas` name.
    ValueError names an option that is not HOST:PORT or a name that does not resolve."""
    addresses = list(admins)
    for entry in replicas:
        host, port = split_address(entry, "--replicas", "controlplane-replicas:18001")
        try:
            resolved = resolve(host, port)
        except OSError as exc:
            raise ValueError(f"--replicas {entry!r}: {host} does not resolve: {exc}") from None
        addresses += [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in resolved]
    return list(dict.fromkeys(addresses))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def render(status: dict[str, Any], routes: dict[str, Any]) -> str:
    """One control plane's answers as text."""
    return render_replicas([Replica("", status, routes)])


def render_replicas(replicas: list[Replica]) -> str:
    """The answers of one or more control plane replicas as text: with several, merged (see the module)."""
    answered = [replica for replica in replicas if replica.status is not None and replica.routes is not None]
    several = len(replicas) > 1
    names = name_replicas(replicas)
    lines: list[str] = []
    for replica in replicas:
        if replica.status is None:
            lines.append(f"control plane at {replica.admin}: {replica.error}")
            continue
        status = replica.status
        lines.append(f"control plane {status['control_plane']}  config version {status['version']}  "
                     f"generation {status['generation']}  ready {_yes(status['ready'])}  "
                     f"synced {_yes(status['synced'])}" + (f"  at {replica.admin}" if several else ""))
    versions = _versions(answered, names)
    if len(versions) > 1:
        lines.append("replicas serve different config versions: "
                     + "; ".join(f"{version} ({', '.join(serving)})" for version, serving in versions.items()))
    notes: dict[str, list[str]] = {}  # note -> the replicas that report it

    def note(text: str, replica: Replica) -> None:
        notes.setdefault(text, []).append(names[id(replica)])

    for replica in answered:
        rollout = replica.status.get("rollout") if replica.status else None
        if rollout:
            lines.append(rollout_line(rollout) + (f"  [{names[id(replica)]}]" if several else ""))
    for replica in answered:
        rejected = replica.status.get("last_rejected") if replica.status else None
        if rejected:
            where = f" on {names[id(replica)]}" if several else ""
            lines.append(f"last edit {rejected['result']} at {rejected['at']}{where}:")
            lines += [f"  {error}" for error in rejected["errors"]]
    rows = [["ROUTE", "LISTENER", "SOURCE", "ACCEPTED", "RESOLVED", "PROGRAMMED", "PROXIES ACKED"]]
    for route in merged_routes([replica.routes for replica in answered if replica.routes is not None]):
        proxies = ", ".join(f"{region or '-'} {n['acked']}/{n['of']}" for region, n in route["proxies"].items())
        rows.append([route["name"], route["listener"] or "-", route["source"], _yes(route["accepted"]),
                     _yes(route["resolved_refs"]), _yes(route["programmed"]), proxies or "no proxy"])
    for replica in answered:
        for text in _route_notes(replica.routes or {}):
            note(text, replica)
    lines += ["", table(rows)]
    if notes:
        lines += [""] + [text + (f"  [{', '.join(seen_by)}]" if several else "") for text, seen_by in notes.items()]
    nacks: list[str] = []
    header = ["PROXY", *(["CONTROL PLANE"] if several else []), "XDS", "REGION", "ROLE", "SYNCED", "LAST SPOKE",
              *(short for _, short in _TYPES), "POLICY"]
    rows = [header]
    for replica in answered:
        for node in replica.status["nodes"] if replica.status else []:
            rows.append(_node_row(node, names[id(replica)] if several else None))
            for kind, short in _TYPES:
                nack = node["types"].get(kind, {}).get("last_nack")
                if nack:
                    nacks.append(f"{node['node_id']} refused {short} {nack['version']}: {nack['error']}")
    lines += ["", table(rows) if len(rows) > 1 else "no proxy connected", *nacks]
    return "\n".join(lines) + "\n"


def rollout_line(rollout: dict[str, Any]) -> str:
    """`rollout of version V: released to eu-west; next us-east once edge-3 holds it, then every other region`."""
    def regions(stage: dict[str, Any]) -> str:
        return "every other region" if stage["regions"] == ["*"] else ", ".join(stage["regions"])

    released = [regions(stage) for stage in rollout["stages"] if stage["released"]]
    pending = [regions(stage) for stage in rollout["stages"] if not stage["released"]]
    line = f"rollout of version {rollout['version']}: released to {'; '.join(released)}; next {pending[0]}"
    if rollout.get("hold"):
        line += " once the route YAML's rollout.hold is false"
    elif rollout["waiting_for"]:
        line += f" once {', '.join(rollout['waiting_for'])} hold{'s' if len(rollout['waiting_for']) == 1 else ''} it"
    elif rollout.get("waiting_for_replicas"):
        line += f" once replica {', '.join(rollout['waiting_for_replicas'])} is as far"
    elif rollout["next_release_at"]:
        line += f" at {rollout['next_release_at']}"
    return line + "".join(f", then {stage}" for stage in pending[1:])


def _versions(replicas: list[Replica], names: dict[int, str]) -> dict[str, list[str]]:
    versions: dict[str, list[str]] = {}
    for replica in replicas:
        versions.setdefault(str(replica.status["version"] if replica.status else None), []).append(names[id(replica)])
    return versions


def merged_routes(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per route over the replicas' /status/routes: accepted, resolved and programmed only when
    every replica lists the route and says so, its proxies summed per region."""
    merged: dict[str, dict[str, Any]] = {}
    listed: dict[str, int] = {}
    for routes in answers:
        for route in routes["routes"]:
            entry = merged.get(route["name"])
            if entry is None:
                entry = merged[route["name"]] = {**route, "proxies": {}}
            else:
                for flag in ("accepted", "resolved_refs", "programmed"):
                    entry[flag] = entry[flag] and route[flag]
            listed[route["name"]] = listed.get(route["name"], 0) + 1
            for region, counts in route["proxies"].items():
                total = entry["proxies"].setdefault(region, {"acked": 0, "of": 0})
                total["acked"] += counts["acked"]
                total["of"] += counts["of"]
    for name, entry in merged.items():
        if listed[name] < len(answers):  # a replica serving another version does not have it
            entry["programmed"] = False
    return list(merged.values())


def _route_notes(routes: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    for route in routes.get("routes", []):
        for error in route.get("errors", []):
            notes.append(f"route {route['name']}: last edit refused: {error}")
        if "rejected" in route:
            refused = route["rejected"]
            notes.append(f"{route['source']}: route {route['name']} refused by Envoy in {refused['region']}, "
                         f"serving its {refused['serving']}: {' '.join(refused['errors'])}")
    for name, refused in routes.get("refused_listeners", {}).items():
        notes.append(f"{refused['source']}: listener {name} refused by Envoy in {refused['region']}, "
                     f"serving its {refused['serving']}: {' '.join(refused['errors'])}")
    for kind, refused in routes.get("unattributed_nacks", {}).items():
        notes.append(f"{kind} version {refused['version']} refused in {refused['region']} "
                     f"(no route entry explains it): {refused['error']}")
    return notes


def _node_row(node: dict[str, Any], replica: str | None) -> list[str]:
    envoy_types = {kind for kind, _ in _TYPES}
    acked = [(node["types"].get(kind, {}).get("acked_version") or "-") for kind, _ in _TYPES]
    # Pavilion's own services (ext_authz, ratelimit) take their tenants or rules as a type of their own.
    policies = [f"{kind} {state.get('acked_version') or '-'}" for kind, state in sorted(node["types"].items())
                if kind not in envoy_types]
    acked.append(", ".join(policies) or "-")
    # "no (waits for Listener, RouteConfiguration)": a proxy mid-handshake says what it lacks.
    pending = node.get("pending") or []
    synced = _yes(node["synced"]) + (f" (waits for {', '.join(pending)})" if pending else "")
    return [node["node_id"], *([replica] if replica is not None else []), node["kind"], node["region"] or "-",
            node["role"] or "-", synced, node["last_seen"], *acked]


def healthy(replicas: list[Replica]) -> bool:
    """Every replica answered, all serve one config version, and each has every route programmed on every
    proxy it serves, every proxy synced, no listener refused and no staged rollout under way."""
    if any(replica.status is None or replica.routes is None for replica in replicas):
        return False
    if len({str(replica.status["version"]) for replica in replicas if replica.status is not None}) > 1:
        return False
    return all(replica.status["synced"] and all(route["programmed"] for route in replica.routes["routes"])
               and not replica.routes.get("refused_listeners") and not replica.status.get("rollout")
               for replica in replicas if replica.status is not None and replica.routes is not None)


def run_status(args: argparse.Namespace) -> int:
    try:
        addresses = admin_addresses(args.admin or [], args.replicas or [])
    except ValueError as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 1
    if not addresses:
        print("status: give --admin HOST:PORT (once per replica) or --replicas HOST:PORT", file=sys.stderr)
        return 1
    try:
        wait = parse_duration(args.wait) if args.wait else 0.0
    except ValueError as exc:
        print(f"status: --wait: {exc}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + wait
    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        while True:  # with --wait, ask again until done or out of time; else once
            replicas = list(pool.map(ask, addresses))
            if done(replicas, args.version) or time.monotonic() + POLL_SECONDS > deadline:
                break
            time.sleep(POLL_SECONDS)
    for replica in replicas:
        if replica.error is not None:
            print(f"status: {replica.error}", file=sys.stderr)
    if all(replica.error is not None for replica in replicas):
        return 1
    if args.json:
        if len(replicas) == 1:
            answer: dict[str, Any] = {"status": replicas[0].status, "routes": replicas[0].routes}
        else:
            answer = {"replicas": [{"admin": replica.admin, "status": replica.status, "routes": replica.routes,
                                    "error": replica.error} for replica in replicas]}
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    else:
        sys.stdout.write(render_replicas(replicas))
    if any(replica.error is not None for replica in replicas):
        return 1
    if args.version and not serve(replicas, args.version):
        print(f"status: not every replica serves config version {args.version}"
              + (f" after {args.wait}" if args.wait else ""), file=sys.stderr)
    return 0 if done(replicas, args.version) else 2


def serve(replicas: list[Replica], version: str) -> bool:
    return all(replica.status is not None and replica.status["version"] == version for replica in replicas)


def done(replicas: list[Replica], version: str | None) -> bool:
    """Healthy, and serving `version` when one is asked for (the one `pavilion validate` prints)."""
    return healthy(replicas) and (not version or serve(replicas, version))
