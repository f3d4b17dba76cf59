"""`pavilion plan DIR --admin HOST:PORT`: what serving DIR would change in the generated xDS, against
what the control plane serves now, without applying anything.

The control plane's admin API lists what it serves (`GET /resources` for the regions and roles,
`GET /resources?region=R&role=ROLE` for each resource's hash, with `&text=1` its text proto).
Translation is deterministic, so equal hashes mean byte-identical resources: only the changed ones
are fetched as text and diffed. Exit status: 0 no change, 2 changes, 1 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import hashlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from aiohttp import web
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import text_format
from google.protobuf.message import Message

from controlplane import resources as urls
from controlplane.cache import DEFAULT_ROLE, Group, SnapshotCache
from controlplane.config.model import Config
from controlplane.config_warnings import config_warnings
from controlplane.resources import short_type
from controlplane.snapshot import Snapshot, build_snapshot
from controlplane.status import json_dumps

TIMEOUT = 30.0


def shown_text(message: Message) -> str:
    """The text proto of a resource as /resources and plan show it: a Secret's private key is replaced
    by a marker naming its digest, so a new key still shows as a change but its bytes never do."""
    if isinstance(message, secret_pb2.Secret) and message.tls_certificate.HasField("private_key"):
        shown = secret_pb2.Secret()
        shown.CopyFrom(message)
        key = shown.tls_certificate.private_key
        raw = key.inline_bytes if key.HasField("inline_bytes") else key.SerializeToString(deterministic=True)
        digest = hashlib.sha256(raw).hexdigest()[:12]  # of the PEM file's bytes: `sha256sum` gives the same
        key.Clear()
        key.inline_string = f"[private key, sha256 {digest}]"
        message = shown
    return str(text_format.MessageToString(message))


def resource_text(snapshot: Snapshot, kind: str, name: str) -> str:
    for type_url, snap in snapshot.types.items():
        if short_type(type_url) == kind and name in snap.resources:
            return shown_text(snap.resources[name].message)
    return ""


def listing(snapshot: Snapshot, *, text: bool, names: set[str] | None = None) -> dict[str, Any]:
    """{"version": V, "types": {short type: {name: {"hash": H[, "text": T]}}}}; `names` are "Type/name"."""
    types: dict[str, Any] = {}
    for type_url, snap in snapshot.types.items():
        kind = short_type(type_url)
        entries: dict[str, Any] = {}
        for name, resource in snap.resources.items():
            if names is not None and f"{kind}/{name}" not in names:
                continue
            entries[name] = {"hash": resource.hash}
            if text:
                entries[name]["text"] = shown_text(resource.message)
        types[kind] = entries
    return {"version": snapshot.version, "types": types}


class ServedResources:
    """The admin endpoint `/resources`."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    async def handle(self, request: web.Request) -> web.Response:
        config = self.cache.config
        if "region" not in request.query:
            roles = sorted({group.role for group in self.cache.groups()} | {DEFAULT_ROLE})
            regions = list(config.regions) if isinstance(config, Config) else []
            return web.json_response({"version": self.cache.config_version or None, "regions": regions,
                                      "roles": roles}, dumps=json_dumps)
        if config is None:
            return web.json_response({"error": "no config is served yet"}, status=503)
        group = Group(request.query["region"], request.query.get("role", DEFAULT_ROLE))
        snapshot = self.cache.current(group)
        if snapshot is None:  # no proxy of that group: translate for the answer, without keeping it
            snapshot = await asyncio.to_thread(self.cache.build, config, group)
        names = set(request.query.getall("name")) if "name" in request.query else None
        body = listing(snapshot, text=request.query.get("text") == "1", names=names)
        return web.json_response(body | {"config_version": self.cache.config_version}, dumps=json_dumps)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/resources", self.handle)]


def _fetch(admin: str, **query: Any) -> dict[str, Any]:
    url = f"http://{admin}/resources"
    if query:
        url += "?" + urllib.parse.urlencode(query, doseq=True)
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return dict(json.loads(response.read()))


def plan(config: Config, admin: str, role: str) -> dict[str, Any]:
    """Per region: added, removed and changed resources ("Type/name"), with a unified diff per change."""
    from controlplane.translate import translate

    index = _fetch(admin)
    regions = sorted(set(config.regions) | set(index["regions"])) or [""]
    result: dict[str, Any] = {"served_version": index["version"], "regions": {}}
    for region in regions:
        planned = build_snapshot(translate(config, region, role))
        served = _fetch(admin, region=region, role=role)["types"]
        mine = listing(planned, text=False)["types"]
        added, removed, changed = [], [], []
        # Virtual hosts are the route tables' Delta form (VHDS): the tables' diff already shows the change.
        for kind in sorted((set(mine) | set(served)) - {short_type(urls.VIRTUAL_HOST)}):
            new, old = mine.get(kind, {}), served.get(kind, {})
            added += [f"{kind}/{name}" for name in sorted(set(new) - set(old))]
            removed += [f"{kind}/{name}" for name in sorted(set(old) - set(new))]
            changed += [f"{kind}/{name}" for name in sorted(set(new) & set(old))
                        if new[name]["hash"] != old[name]["hash"]]
        diffs: dict[str, str] = {}
        if changed:
            texts = _fetch(admin, region=region, role=role, text="1", name=changed)["types"]
            for key in changed:
                kind, name = key.split("/", 1)
                before = texts.get(kind, {}).get(name, {}).get("text", "")
                after = resource_text(planned, kind, name)
                diffs[key] = "".join(difflib.unified_diff(
                    before.splitlines(keepends=True), after.splitlines(keepends=True),
                    fromfile=f"served/{region}/{key}", tofile=f"planned/{region}/{key}", n=3))
        result["regions"][region or "-"] = {"added": added, "removed": removed, "changed": changed, "diffs": diffs}
    return result


def run_plan(args: argparse.Namespace) -> int:
    from controlplane.config.load import load_config
    from pavilion.errors import ConfigErrors

    try:
        config = load_config(args.directory)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    for line in config_warnings(config):
        print(line, file=sys.stderr)
    try:
        result = plan(config, args.admin, args.role)
    except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
        print(f"plan: cannot read what {args.admin} serves: {exc}", file=sys.stderr)
        return 1
    changes = sum(len(r["added"]) + len(r["removed"]) + len(r["changed"]) for r in result["regions"].values())
    if args.json:
        sys.stdout.write(json_dumps(result))
    else:
        print(f"served config version {result['served_version']}")
        for region, found in result["regions"].items():
            if not (found["added"] or found["removed"] or found["changed"]):
                print(f"region {region}: no change")
                continue
            print(f"region {region}: {len(found['added'])} added, {len(found['removed'])} removed, "
                  f"{len(found['changed'])} changed")
            for key in found["added"]:
                print(f"  + {key}")
            for key in found["removed"]:
                print(f"  - {key}")
            for key in found["changed"]:
                print(f"  ~ {key}")
            for text in found["diffs"].values():
                sys.stdout.write(text)
    return 2 if changes else 0
