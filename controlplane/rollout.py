"""Staged rollout: a new config reaches the regions of the route YAML's `rollout.stages` one stage at
a time, so a change that breaks something shows in the first region while the others still serve
what they had.

The cache serves the first stage at once (controlplane/cache.py). This loop releases each next stage
once every proxy of the released stages that is connected here holds the new config (acked every type
its group is served) and has held it for `bake` seconds: a proxy that refuses it (a NACK) holds the
rollout where it is. A route Envoy refuses falls back to its last accepted form (controlplane/fallback.py),
which makes a new config and starts the rollout over from the first stage, without the refused form.
A newer edit does the same; the regions not yet released keep serving what they had meanwhile.

`rollout.hold: true` stops it after the first stage: a canary region runs the edit, the others wait for
the edit that sets it false (which starts the rollout over, the first stage already holding it).

Several control plane replicas each run their own rollout, gated by the proxies connected to them.
With `--peers` (the address of every replica, like a headless Service's name) a replica about to
release a stage first asks its peers' /status, and waits while one of them serves another version,
or has released fewer stages, or has a proxy of a released stage that does not hold the config. So a
refusal in eu-west on one replica holds us-east on all of them. A peer that does not answer is
passed over (logged): a replica that is gone has no proxies left to protect. Dropping `rollout:`
from the route YAML releases every region at once.

A replica that starts knows nothing of what the regions ran before (it serves its first config to
every group). So with `--peers` it reports itself not ready while a peer has a rollout under way:
Envoys keep to the replicas that carry the rollout on, and this one takes proxies once it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.cache import SnapshotCache
from controlplane.rollout_stages import Rollout
from controlplane.server.stream import iso_time
from controlplane.status import StatusBoard
from controlplane.status_cli import admin_addresses
from pavilion.log import get_logger
from pavilion.metrics import NAMESPACE, Gauge

log = get_logger(__name__)

__all__ = ["RolloutDriver"]

ROLLOUT_RUNNING = Gauge("controlplane_rollout_running", "1 while a staged rollout is under way.", namespace=NAMESPACE)
ROLLOUT_WAITING = Gauge("controlplane_rollout_waiting_proxies",
                        "Proxies of a staged rollout's released stages that do not hold its config yet.",
                        namespace=NAMESPACE)
_WAITING_SHOWN = 20  # node ids listed in /status as holding a stage back
PEER_TIMEOUT = 2.0


class RolloutDriver:
    # Each step walks the streams of the released stages: once a second keeps that cheap for a large fleet,
    # and a bake is minutes.
    def __init__(self, cache: SnapshotCache, board: StatusBoard, *, interval: float = 1.0, peers: Sequence[str] = (),
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        """`peers`: HOST:PORT of the replicas' admin ports, each name standing for every address it resolves
        to (this replica's own among them or not)."""
        self.cache = cache
        self.board = board
        self.interval = interval
        self.peers = tuple(peers)
        self._held_by: list[str] = []  # the peers that held the last release back
        # Whether this replica may take proxies: at once without peers, else once no peer rolls out.
        self.ready = not self.peers
        self._monotonic = monotonic
        self._wall = wall
        # (version, released stage) and since when (monotonic) every proxy of the released stages held it
        self._settled: tuple[tuple[str, int], float] | None = None
        self._announced: tuple[str, int] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.ready:
                await self.join()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            await self.step()

    async def join(self) -> None:
        """Become ready once no peer (that answers) has a rollout under way."""
        rolling = [str(answer.get("control_plane")) for answer in await self._peer_answers()
                   if answer.get("rollout") is not None]
        if rolling:
            log.info("rollout_waiting_to_join", peers=rolling)
        else:
            self.ready = True

    async def step(self) -> None:
        """Release the next stage if the released ones have settled and baked."""
        rollout = self.cache.rollout
        ROLLOUT_RUNNING.set(rollout is not None)
        if rollout is None:
            ROLLOUT_WAITING.set(0)
            self._settled = None
            return
        at = (rollout.version, rollout.released)
        if self._announced != at:
            self._announced = at
            if rollout.released == 0:
                log.info("rollout_started", version=rollout.version, stage=0, regions=rollout.stages.regions(0),
                         bake=rollout.stages.bake, hold=rollout.stages.hold)
        waiting = len(self._waiting(rollout))
        ROLLOUT_WAITING.set(waiting)
        if waiting or rollout.stages.hold:  # `hold: true`: the first stage runs it, the others wait for an edit
            self._settled = None
            return
        now = self._monotonic()
        if self._settled is None or self._settled[0] != at:
            self._settled = (at, now)
        if now - self._settled[1] < rollout.stages.bake:
            return
        self._held_by = await self._peers_holding(rollout) if self.peers else []
        if self._held_by or self.cache.rollout != rollout:  # asking took time: a new config may have come
            return
        stage = rollout.released + 1
        await self.cache.release(stage)
        if stage >= rollout.stages.count:
            log.info("rollout_finished", version=rollout.version)
        else:
            log.info("rollout_stage_released", version=rollout.version, stage=stage,
                     regions=rollout.stages.regions(stage))

    def _waiting(self, rollout: Rollout) -> list[str]:
        """Node ids of the released stages that do not hold everything they are served yet."""
        stages, cache = rollout.stages, self.cache
        return [stream.node_id for stream in self.board.streams.values()
                if stream.group is not None and stages.stage_of(stream.group.region) <= rollout.released
                and not stream.synced(cache.current(stream.group))]

    async def _peers_holding(self, rollout: Rollout) -> list[str]:
        """The peers that are not as far as this replica in `rollout` (by their control plane name)."""
        return [str(answer.get("control_plane")) for answer in await self._peer_answers()
                if not _as_far(answer, rollout)]

    async def _peer_answers(self) -> list[dict[str, Any]]:
        """The /status of every peer that answers, this replica's own left out."""
        try:
            addresses = await asyncio.to_thread(admin_addresses, [], list(self.peers))
        except ValueError as exc:
            log.warning("rollout_peers_unresolved", error=str(exc))
            return []
        answers = await asyncio.gather(*(asyncio.to_thread(_status_of, address) for address in addresses))
        found = []
        for address, answer in zip(addresses, answers, strict=True):
            if isinstance(answer, str):
                log.warning("rollout_peer_unanswered", peer=address, error=answer)
            elif answer.get("instance") != self.board.instance:
                found.append(answer)
        return found

    def status(self) -> dict[str, Any] | None:
        """The rollout under way for /status, or None."""
        rollout = self.cache.rollout
        if rollout is None:
            return None
        stages = rollout.stages
        waiting = self._waiting(rollout)
        settled = self._settled
        next_at = None
        if not waiting and settled is not None and settled[0] == (rollout.version, rollout.released):
            next_at = iso_time(self._wall() + max(0.0, settled[1] + stages.bake - self._monotonic()))
        return {
            "version": rollout.version,
            "bake": stages.bake,
            "stages": [{"regions": stages.regions(index), "released": index <= rollout.released}
                       for index in range(stages.count + 1)],
            "hold": stages.hold,
            "waiting_for": waiting[:_WAITING_SHOWN],
            "waiting_for_replicas": self._held_by if settled is not None else [],
            "next_release_at": next_at,
        }


def _status_of(address: str) -> dict[str, Any] | str:
    """A peer's /status, or why it could not be had."""
    try:
        with urllib.request.urlopen(f"http://{address}/status", timeout=PEER_TIMEOUT) as response:
            return dict(json.loads(response.read()))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return str(exc)


def _as_far(status: dict[str, Any], rollout: Rollout) -> bool:
    """Whether a peer (its /status) serves `rollout`'s version at least as far, every proxy it released holding it."""
    if status.get("version") != rollout.version:
        return False
    theirs = status.get("rollout")
    if theirs is None:
        return True  # done with it
    released = sum(1 for stage in theirs["stages"] if stage["released"]) - 1
    return released >= rollout.released and not theirs["waiting_for"]
