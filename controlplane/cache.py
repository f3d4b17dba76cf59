"""The current config and one snapshot per node group, with watches that wake streams on change.

Nodes are grouped by (region, role): every Envoy of a group gets the same resources, so a group's
snapshot is translated and serialized once. A group's snapshot is built on its first connection and
rebuilt for every known group when the config changes; translation runs in a worker thread so
streams keep being served while a large config is translated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from envoy.config.core.v3 import base_pb2
from google.protobuf.message import Message

from controlplane import resources as urls
from controlplane.rollout_stages import Rollout, Stages
from controlplane.snapshot import Snapshot, build_snapshot
from pavilion.versions import config_version

DEFAULT_ROLE = "edge"

__all__ = ["DEFAULT_ROLE", "Group", "SnapshotCache", "config_version", "group_of"]

Translator = Callable[[Any, str, str], Mapping[str, Sequence[Message]]]


class Group(NamedTuple):
    region: str
    role: str

    def __str__(self) -> str:
        return f"{self.region or '-'}/{self.role}"


def _metadata_string(node: base_pb2.Node, key: str) -> str:
    fields = node.metadata.fields
    if key in fields and fields[key].WhichOneof("kind") == "string_value":
        return str(fields[key].string_value)
    return ""


def group_of(node: base_pb2.Node) -> Group:
    """(region, role): region from the locality (else metadata `region`), role from metadata `role`."""
    region = node.locality.region or _metadata_string(node, "region")
    role = _metadata_string(node, "role") or DEFAULT_ROLE
    return Group(region, role)


class SnapshotCache:
    """Owns which snapshot each group is served; `generation` grows by one per installed config, and per
    stage a staged rollout releases.

    With the config's `rollout:` (controlplane/rollout_stages.py), a new config is translated for every
    group at once, but served at first only to the groups of the first stage's regions; the others keep
    what they had until `release` reaches their stage. A group first seen meanwhile gets the newest
    config if its stage is released, else what its region runs: the config last released there (a
    rollout that a newer config started over), or the one every region had before.
    """

    def __init__(self, translator: Translator, regional: Translator | None = None) -> None:
        self._translate = translator
        # Only the types `regional` returns depend on the region; the others are translated once per
        # role and shared by every region's snapshot (the same objects, so the same bytes and versions).
        self._regional = regional
        self._config: Any = None
        self._config_version = ""
        self._snapshots: dict[Group, Snapshot] = {}
        self._generation = 0
        self._lock = asyncio.Lock()  # one build at a time: a group never gets a stale config's snapshot
        # A staged rollout under way: the newest config's snapshot per group (served or not yet), its
        # stages and how many are released, and the config (and version) served before it began.
        self._rollout: Rollout | None = None
        self._target: dict[Group, Snapshot] = {}
        self._before: tuple[Any, str] = (None, "")
        self._released_in: dict[str, tuple[Any, str]] = {}  # region -> config (and version) last released there
        self._changed = asyncio.Condition()
        self._loaded = asyncio.Event()

    @property
    def config(self) -> Any:
        return self._config

    @property
    def config_version(self) -> str:
        return self._config_version

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def rollout(self) -> Rollout | None:
        """The staged rollout under way, or None when every group is served the newest config."""
        return self._rollout

    def serves_newest(self, group: Group) -> bool:
        """Whether `group` is served the newest config (`config`), not what a staged rollout keeps it on."""
        rollout = self._rollout
        return rollout is None or rollout.stages.stage_of(group.region) <= rollout.released

    def groups(self) -> dict[Group, Snapshot]:
        return dict(self._snapshots)

    def current(self, group: Group) -> Snapshot | None:
        return self._snapshots.get(group)

    def build(self, config: Any, group: Group, like: Snapshot | None = None, version: str = "") -> Snapshot:
        """The snapshot `config` gives `group`, without installing it (pure; call from a thread).
        `like`: the snapshot of another group of the same role for the same config, to share from.
        `version`: the config's version, which Pavilion's own types are served under."""
        pinned = dict.fromkeys(urls.PAVILION_TYPES, version) if version else None
        if like is not None and self._regional is not None:
            return build_snapshot(self._regional(config, group.region, group.role), reuse=like.types, versions=pinned)
        return build_snapshot(self._translate(config, group.region, group.role), versions=pinned)

    def _build_all(self, config: Any, groups: Sequence[Group], version: str) -> dict[Group, Snapshot]:
        built: dict[Group, Snapshot] = {}
        by_role: dict[str, Snapshot] = {}
        for group in sorted(groups):
            built[group] = self.build(config, group, by_role.get(group.role), version)
            by_role.setdefault(group.role, built[group])
        return built

    async def install(self, config: Any, config_version: str) -> dict[Group, Snapshot]:
        """Translate `config` for every known group, then swap everything at once and wake the streams.

        Raises whatever translation raises; the cache then keeps serving the previous config.
        """
        async with self._lock:
            snapshots = await asyncio.to_thread(self._build_all, config, list(self._snapshots), config_version)
            stages = Stages.of(config) if self._loaded.is_set() else None  # a first config goes everywhere
            if stages is None:
                self._rollout, self._target, self._snapshots = None, {}, snapshots
                self._before, self._released_in = (None, ""), {}
            else:
                if self._rollout is None:  # else the regions not yet released still serve what came before
                    self._before = (self._config, self._config_version)
                self._rollout, self._target = Rollout(stages, config_version, released=0), snapshots
                self._released_in.update(dict.fromkeys(stages.named[0], (config, config_version)))
                self._snapshots = {group: snapshots[group] if stages.stage_of(group.region) == 0 else served
                                   for group, served in self._snapshots.items()}
            self._config, self._config_version = config, config_version
            self._generation += 1
            self._loaded.set()
        await self._notify()
        return dict(snapshots)

    async def release(self, stage: int) -> None:
        """Serve the newest config to the groups of the rollout's stages up to `stage`; past the last
        named stage, to every group, which ends the rollout."""
        async with self._lock:
            rollout = self._rollout
            if rollout is None or stage <= rollout.released:
                return
            for group, snapshot in self._target.items():
                if rollout.stages.stage_of(group.region) <= stage:
                    self._snapshots[group] = snapshot
            if stage >= rollout.stages.count:
                self._rollout, self._target, self._before, self._released_in = None, {}, (None, ""), {}
            else:
                self._released_in.update(dict.fromkeys(
                    (region for regions in rollout.stages.named[:stage + 1] for region in regions),
                    (self._config, self._config_version)))
                self._rollout = rollout._replace(released=stage)
            self._generation += 1
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def snapshot(self, group: Group) -> Snapshot:
        """The group's snapshot, built now if this is the group's first node; waits for a first config."""
        await self._loaded.wait()
        existing = self._snapshots.get(group)
        if existing is not None:
            return existing
        async with self._lock:
            existing = self._snapshots.get(group)
            if existing is None:
                # `like` shares the types that do not depend on the region: it must be of the same config.
                newest = self._target if self._rollout is not None else self._snapshots
                like = next((snap for known, snap in newest.items() if known.role == group.role), None)
                existing = await asyncio.to_thread(self.build, self._config, group, like, self._config_version)
                rollout = self._rollout
                if rollout is not None:
                    self._target[group] = existing
                    if rollout.stages.stage_of(group.region) > rollout.released:
                        before, version = self._released_in.get(group.region, self._before)
                        existing = await asyncio.to_thread(self.build, before, group, None, version)
                self._snapshots[group] = existing
            return existing

    async def wait_newer(self, generation: int) -> int:
        """Return once a config newer than `generation` is installed; returns the new generation."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._generation > generation)
        return self._generation
