"""The introspection client secret follows its file (a Kubernetes Secret's `..data` swap) without a config
reload, against the real local introspection endpoint; a new file without a usable secret keeps the old one."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from extauthz import introspection
from extauthz import tenant as tenant_module
from extauthz.authorizer import Authorizer
from extauthz.tenant_set import retire
from tests.extauthz.introspection_server import IntrospectionServer
from tests.extauthz.test_introspection import Clock, legacy, make_stack

FIRST = "s3cret: with spaces+plus"


class SecretVolume:
    """A directory laid out as kubelet mounts a Secret: `name -> ..data/name`, `..data -> ..<version>/`,
    a new version written beside the old one and `..data` swapped to it in one rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = 0
        root.mkdir()
        (root / "introspection-secret").symlink_to("..data/introspection-secret")

    @property
    def path(self) -> Path:
        return self.root / "introspection-secret"

    def publish(self, content: str | None, *, as_directory: bool = False) -> None:
        """A new version holding `content` (None: no such key; as_directory: a directory where the file was)."""
        self.versions += 1
        version = self.root / f"..v{self.versions}"
        version.mkdir()
        if as_directory:
            (version / "introspection-secret").mkdir()
        elif content is not None:
            (version / "introspection-secret").write_text(content)
        (self.root / "..data_tmp").symlink_to(version.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")


@dataclass
class Stack:
    server: IntrospectionServer
    authorizer: Authorizer
    clock: Clock
    volume: SecretVolume

    async def check(self, token: str) -> tuple[int, str]:
        now = self.clock.now
        self.server.answers[token] = {"active": True, "iss": "https://idp.legacy.test", "aud": "accounts-api",
                                      "sub": "user-7", "exp": int(now) + 600, "iat": int(now)}
        outcome = await self.authorizer.check({"authorization": f"Bearer {token}"}, "/accounts",
                                              {"tenant": "legacy"})
        return outcome.status, outcome.reason


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    server = await IntrospectionServer(client_secret=FIRST).start()
    volume = SecretVolume(tmp_path / "secret")
    volume.publish(FIRST + "\n")
    clock = Clock()
    authorizer, _ = await make_stack(tmp_path, server, legacy(server, volume.path), clock=clock)
    try:
        yield Stack(server, authorizer, clock, volume)
    finally:
        await retire(authorizer.tenants, None)
        await server.stop()


async def test_a_rotated_secret_file_is_used_without_a_config_reload(stack: Stack,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    generation = stack.authorizer.tenants
    assert await stack.check("token-before") == (200, "ok")
    stack.server.client_secret = "Zq9: the second+one"
    assert await stack.check("token-between") == (503, "introspection_refused")  # the file still has the old
    stack.volume.publish("Zq9: the second+one\n")
    await asyncio.sleep(introspection.SECRET_CHECK_SECONDS + 0.05)  # the file is looked at once a second at most
    assert await stack.check("token-after") == (200, "ok")
    assert stack.authorizer.tenants is generation  # no reload: the same tenant generation
    introspector = generation.introspector(generation.tenants[0])
    assert introspector is not None and introspector.status()["secret_reloads"] == 1
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "introspection_secret_reloaded" in text
    assert "Zq9" not in text and "s3cret" not in text


@pytest.mark.parametrize("new", ["empty", "missing", "directory", "control characters"])
async def test_a_new_file_without_a_usable_secret_keeps_the_old_one(stack: Stack, new: str,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(introspection, "SECRET_CHECK_SECONDS", 0.0)  # look at the file before every call
    assert await stack.check("token-1") == (200, "ok")
    content = {"empty": "", "missing": None, "directory": None, "control characters": "new\x00secret"}[new]
    stack.volume.publish(content, as_directory=new == "directory")
    assert await stack.check("token-2") == (200, "ok")
    assert await stack.check("token-3") == (200, "ok")
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert text.count("introspection_secret_unreadable") == 1  # once per change of the file, not per call
    assert "introspection_secret_reloaded" not in text
    # A good file afterwards is taken up.
    stack.server.client_secret = "third"
    stack.volume.publish("third")
    assert await stack.check("token-4") == (200, "ok")
    logged = capsys.readouterr()
    assert "introspection_secret_reloaded" in logged.out + logged.err


async def test_an_unchanged_file_is_not_read_again(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(introspection, "SECRET_CHECK_SECONDS", 0.0)
    reads: list[str] = []
    real = tenant_module.read_secret_file

    def counting(path: str) -> str:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(introspection, "read_secret_file", counting)
    for n in range(3):
        assert await stack.check(f"token-{n}") == (200, "ok")
    assert len(reads) == 1  # the first call looks (its stamp was unknown); the others only stat
