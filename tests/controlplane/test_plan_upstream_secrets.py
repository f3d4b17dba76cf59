"""`pavilion plan` and `/resources?text=1` show a service's client key as a digest marker only: a new
client key shows as a change of `<service>/client-certificate`, never its bytes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from controlplane.config.load import load_config
from controlplane.config.model import Config
from controlplane.plan import ServedResources, plan
from tests.controlplane.certs import Ca, make_ca, write_pair
from tests.controlplane.test_plan_secrets import leaks, served

CONFIG = """regions: [eu-west]
listeners:
  - {name: public, address: 127.0.0.1, port: 8080}
services:
  - name: accounts
    endpoints: [{address: 127.0.0.1:9001, region: eu-west}]
    tls: {ca: tls/ca.pem, server_name: accounts.internal, certificate: tls/gateway.pem, key: tls/gateway-key.pem}
routes:
  - {name: accounts, match: {prefix: /}, service: accounts}
"""


def load_with_new_client_certificate(directory: Path, ca: Ca) -> tuple[Config, bytes]:
    cert, key = ca.issue("gateway", server=False)
    _cert, key_path = write_pair(directory / "tls", cert, key, stem="gateway")
    (directory / "tls" / "ca.pem").write_bytes(ca.pem)
    (directory / "gateway.yaml").write_text(CONFIG)
    return load_config(directory), key_path.read_bytes()


async def test_plan_shows_a_new_client_key_as_a_change_without_its_bytes(tmp_path: Path) -> None:
    ca = make_ca()
    config, old_key = load_with_new_client_certificate(tmp_path, ca)
    app = web.Application()
    app.add_routes(ServedResources(await served(config)).routes())
    async with TestServer(app, host="127.0.0.1") as server:
        rotated, new_key = load_with_new_client_certificate(tmp_path, ca)
        result = await asyncio.to_thread(plan, rotated, f"127.0.0.1:{server.port}", "edge")
        listing = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/resources?region=eu-west&text=1")
    found = result["regions"]["eu-west"]
    assert found["changed"] == ["Secret/accounts/client-certificate"]
    diff = found["diffs"]["Secret/accounts/client-certificate"]
    assert f"[private key, sha256 {hashlib.sha256(old_key).hexdigest()[:12]}]" in diff
    assert f"[private key, sha256 {hashlib.sha256(new_key).hexdigest()[:12]}]" in diff
    assert leaks(json.dumps(result), old_key) == [] and leaks(json.dumps(result), new_key) == []
    assert "BEGIN CERTIFICATE" in listing["types"]["Secret"]["accounts/upstream-ca"]["text"]
    assert leaks(json.dumps(listing), old_key) == []


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))
