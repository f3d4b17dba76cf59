"""Certificates per region in what watches certificates: the expiry gauge has one series per region's
certificate (`<listener>/certificate@<region>`, the default under the plain name) whether or not an Envoy
of that region is connected; `pavilion validate` warns of each region's expiry and of route hosts no
certificate of the listener names; /resources never shows a region's key."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache
from controlplane.cert_expiry import SECRET_EXPIRY, CertificateExpiry, expiry_warnings
from controlplane.config.listener_tls import referenced_files
from controlplane.config.load import load_config
from controlplane.plan import ServedResources
from controlplane.status import StatusBoard
from controlplane.tls_coverage import host_coverage_warnings
from controlplane.translate import translate, translate_regional
from controlplane.watch import Reloader
from pavilion.log import configure_logging
from tests.controlplane.certs import DAY, Ca, cert_pem, key_pem, make_ca
from tests.controlplane.test_plan_secrets import leaks

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

CONFIG = """regions: [eu-west, us-east, ap-south]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8443
    tls:
      {default}
      regions:
        eu-west: {{certificate: tls/eu.pem, key: tls/eu-key.pem}}
        us-east: {{certificate: tls/us.pem, key: tls/us-key.pem}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
{routes}
"""
DEFAULT = "certificate: tls/edge.pem\n      key: tls/edge-key.pem"
ROUTE = "  - {name: accounts, match: {prefix: /}, service: accounts}"


@pytest.fixture(autouse=True)
def _clean_gauge() -> Iterator[None]:
    configure_logging("warning", "console", io.StringIO())
    SECRET_EXPIRY.clear()
    yield
    SECRET_EXPIRY.clear()


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def write_leaf(root: Path, ca: Ca, stem: str, days: float, name: str) -> bytes:
    cert, key = ca.issue(stem, not_after=NOW + days * DAY, dns_names=(name,))
    (root / "tls").mkdir(parents=True, exist_ok=True)
    (root / "tls" / f"{stem}.pem").write_bytes(cert_pem(cert))
    (root / "tls" / f"{stem}-key.pem").write_bytes(key_pem(key))
    return key_pem(key)


def write_config(root: Path, ca: Ca, *, default: bool = True, routes: str = ROUTE,
                 days: tuple[float, float, float] = (60, 40, 20)) -> Path:
    write_leaf(root, ca, "edge", days[0], "api.example")
    write_leaf(root, ca, "eu", days[1], "eu.api.example")
    write_leaf(root, ca, "us", days[2], "us.api.example")
    (root / "gateway.yaml").write_text(CONFIG.format(default=DEFAULT if default else "", routes=routes))
    return root


def gauge(label: str) -> float | None:
    return REGISTRY.get_sample_value("pavilion_controlplane_certificate_expiry_timestamp_seconds", {"secret": label})


def plane(root: Path) -> tuple[SnapshotCache, Reloader, CertificateExpiry]:
    cache = SnapshotCache(translate, regional=translate_regional)
    reloader = Reloader(str(root), cache, StatusBoard(cache, identifier="test"), loader=load_config,
                        files=referenced_files)
    return cache, reloader, CertificateExpiry(cache, lambda config: translate(config, "", "edge")[urls.SECRET])


async def test_the_gauge_has_a_series_per_regions_certificate_connected_or_not(tmp_path: Path, ca: Ca) -> None:
    cache, reloader, expiry = plane(write_config(tmp_path, ca))
    assert await reloader.reload()
    await expiry.refresh()  # no Envoy connected: measured from the config
    assert gauge("public/certificate") == (NOW + 60 * DAY).timestamp()
    assert gauge("public/certificate@eu-west") == (NOW + 40 * DAY).timestamp()
    assert gauge("public/certificate@us-east") == (NOW + 20 * DAY).timestamp()
    assert [entry["secret"] for entry in expiry.expiring()] == ["public/certificate@us-east"]

    await cache.snapshot(Group("us-east", "edge"))  # an Envoy of us-east: its snapshot holds us-east's content
    await expiry.refresh()
    assert set(expiry.secrets) == {"public/certificate", "public/certificate@eu-west", "public/certificate@us-east"}
    assert gauge("public/certificate") == (NOW + 60 * DAY).timestamp()  # not overwritten by us-east's content

    write_config(tmp_path, ca, default=False, days=(60, 41, 21))  # regions alone: the default's series goes
    (tmp_path / "gateway.yaml").write_text((tmp_path / "gateway.yaml").read_text().replace(
        "regions: [eu-west, us-east, ap-south]", "regions: [eu-west, us-east]"))
    assert await reloader.reload()
    await expiry.refresh()
    assert gauge("public/certificate") is None
    assert gauge("public/certificate@eu-west") == (NOW + 41 * DAY).timestamp()
    assert gauge("public/certificate@us-east") == (NOW + 21 * DAY).timestamp()


def test_validate_warns_of_each_regions_expiry_at_the_listener(tmp_path: Path, ca: Ca) -> None:
    write_config(tmp_path, ca, days=(60, 12, 3))
    lines = expiry_warnings(load_config(tmp_path), clock=lambda: NOW)
    assert [line.split(": warning: ", 1)[1].split(" expire at ")[0] for line in lines] == [
        "the certificates of secret public/certificate served in region us-east",
        "the certificates of secret public/certificate served in region eu-west"]
    assert all("gateway.yaml:3:" in line for line in lines)


def test_a_host_no_regions_certificate_names_is_a_warning(tmp_path: Path, ca: Ca) -> None:
    routes = "\n".join([
        "  - {name: eu, hosts: [eu.api.example], match: {prefix: /eu}, service: accounts}",
        "  - {name: us, hosts: [us.api.example, api.example], match: {prefix: /us}, service: accounts}",
        "  - {name: other, hosts: [other.example], match: {prefix: /o}, service: accounts}"])
    lines = host_coverage_warnings(load_config(write_config(tmp_path, ca, routes=routes)))
    assert len(lines) == 1, lines
    assert ("route other answers host other.example, which no certificate of listener public names (default: it "
            "names api.example; eu-west: it names eu.api.example; us-east: it names us.api.example)") in lines[0]


async def test_resources_show_each_regions_certificate_never_its_key(tmp_path: Path, ca: Ca) -> None:
    write_config(tmp_path, ca)
    us_key = (tmp_path / "tls" / "us-key.pem").read_bytes()
    config = load_config(tmp_path)
    cache = SnapshotCache(translate, regional=translate_regional)
    await cache.install(config, "v1")
    await cache.snapshot(Group("eu-west", "edge"))
    await cache.snapshot(Group("us-east", "edge"))
    app = web.Application()
    app.add_routes(ServedResources(cache).routes())
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        url = server.make_url("/resources?region=us-east&role=edge&text=1")
        async with session.get(url) as response:
            raw = await response.text()
    text = json.loads(raw)["types"]["Secret"]["public/certificate"]["text"]
    assert f"[private key, sha256 {hashlib.sha256(us_key).hexdigest()[:12]}]" in text
    assert (tmp_path / "tls" / "us.pem").read_text().splitlines()[1] in text  # us-east's certificate, shown
    assert leaks(raw, us_key) == []
