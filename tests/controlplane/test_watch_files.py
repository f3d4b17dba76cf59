"""Rotation: a change to a certificate or key file the config names reloads it, through a `..data`
symlink swap as in a Kubernetes Secret volume; a broken certificate is refused and the last good one
keeps serving."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache
from controlplane.config.listener_tls import referenced_files
from controlplane.config.load import load_config
from controlplane.status import StatusBoard
from controlplane.translate import translate, translate_regional
from controlplane.watch import Reloader
from pavilion.log import configure_logging
from tests.controlplane.certs import Ca, cert_pem, key_pem, make_ca

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8443
    tls: {{certificate: {secret}/tls.crt, key: {secret}/tls.key}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""


@pytest.fixture(autouse=True)
def _log_to_a_stream_that_stays_open() -> None:
    # Other tests run `pavilion.cli.main`, which points structlog at pytest's captured stderr; that file is
    # closed once they end, and a logger first used afterwards would write to it.
    configure_logging("warning", "console", io.StringIO())


def project(secret: Path, ca: Ca, name: str) -> bytes:
    """Write a new leaf the way kubelet updates a Secret volume: a new timestamped folder, then the
    `..data` symlink swapped to it in one rename. Returns the certificate's PEM."""
    cert, key = ca.issue("edge")
    folder = secret / f"..{name}"
    folder.mkdir()
    (folder / "tls.crt").write_bytes(cert_pem(cert))
    (folder / "tls.key").write_bytes(key_pem(key))
    (secret / "..data_tmp").symlink_to(folder.name)
    os.replace(secret / "..data_tmp", secret / "..data")
    for file in ("tls.crt", "tls.key"):
        if not (secret / file).is_symlink():
            (secret / file).symlink_to(f"..data/{file}")
    return cert_pem(cert)


def served_chain(cache: SnapshotCache) -> bytes:
    snapshot = cache.current(Group("eu-west", "edge"))
    assert snapshot is not None
    secret = snapshot.types[urls.SECRET].resources["public/certificate"].message
    return bytes(secret.tls_certificate.certificate_chain.inline_bytes)  # type: ignore[attr-defined]


async def wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_rotated_certificate_is_served_and_a_broken_one_refused(tmp_path: Path) -> None:
    ca = make_ca()
    secret = tmp_path / "secret"  # outside the route folder, as a mounted Secret would be
    secret.mkdir()
    routes = tmp_path / "routes"
    routes.mkdir()
    first = project(secret, ca, "2026_11_28_01")
    (routes / "gateway.yaml").write_text(CONFIG.format(secret=secret))
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier="t")
    reloader = Reloader(str(routes), cache, board, loader=load_config, files=referenced_files)
    assert await reloader.reload()
    await cache.snapshot(Group("eu-west", "edge"))
    assert served_chain(cache) == first
    stop = asyncio.Event()
    poller = asyncio.create_task(reloader.poll_files(stop, interval=0.05))
    try:
        await asyncio.sleep(0.2)
        assert board.render()["reloads"]["applied"] == 1  # nothing changed: no reload

        second = project(secret, ca, "2026_11_28_02")
        await wait_for(lambda: served_chain(cache) == second)
        good = cache.config_version

        # A broken certificate: refused with the YAML place, the last good one keeps serving, no retry storm.
        broken = secret / "..2026_11_28_03"
        broken.mkdir()
        (broken / "tls.crt").write_text("not a certificate\n")
        (broken / "tls.key").write_bytes((secret / "tls.key").read_bytes())
        (secret / "..data_tmp").symlink_to(broken.name)
        os.replace(secret / "..data_tmp", secret / "..data")
        await wait_for(lambda: board.render().get("last_rejected") is not None)
        errors = board.render()["last_rejected"]["errors"]
        assert errors == [f"{routes}/gateway.yaml:6:24: listeners[public].tls.certificate: {secret}/tls.crt holds "
                          "no PEM certificate (-----BEGIN CERTIFICATE-----)"]
        await asyncio.sleep(0.3)
        assert board.render()["reloads"]["rejected"] == 1
        assert cache.config_version == good and served_chain(cache) == second

        third = project(secret, ca, "2026_11_28_04")
        await wait_for(lambda: served_chain(cache) == third)
    finally:
        stop.set()
        await asyncio.wait_for(poller, 3)


async def test_a_config_without_files_is_never_reloaded_by_the_poll(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(CONFIG.split("    tls:")[0] + CONFIG.split("tls.key}}\n")[1].format())
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier="t")
    reloader = Reloader(str(tmp_path), cache, board, loader=load_config, files=referenced_files)
    assert await reloader.reload()
    stop = asyncio.Event()
    poller = asyncio.create_task(reloader.poll_files(stop, interval=0.02))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(poller, 3)
    assert board.render()["reloads"] == {"applied": 1, "unchanged": 0, "rejected": 0, "failed": 0}


async def test_a_certificate_that_appears_after_the_yaml_naming_it_is_loaded(tmp_path: Path) -> None:
    """A Secret mounted after the ConfigMap that names it: the rejected load's files are polled too."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (tmp_path / "gateway.yaml").write_text(CONFIG.format(secret=secret))
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier="t")
    reloader = Reloader(str(tmp_path), cache, board, loader=load_config, files=referenced_files)
    assert not await reloader.reload()
    assert [path for path, _ in reloader.read_files] == [f"{secret}/tls.crt", f"{secret}/tls.key"]
    stop = asyncio.Event()
    poller = asyncio.create_task(reloader.poll_files(stop, interval=0.05))
    try:
        await asyncio.sleep(0.2)
        assert board.render()["reloads"]["rejected"] == 1  # nothing changed: not tried again
        chain = project(secret, make_ca(), "2026_11_28_01")
        await wait_for(lambda: cache.loaded)
        await cache.snapshot(Group("eu-west", "edge"))
        assert served_chain(cache) == chain
    finally:
        stop.set()
        await asyncio.wait_for(poller, 3)
