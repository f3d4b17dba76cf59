"""What the server remembers about one xDS stream: the node, and per type URL what was asked,
sent, acked and rejected. Shared by the SotW and Delta servers; /status reads it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane import resources as urls
from controlplane.cache import Group
from controlplane.snapshot import EMPTY, Resource, Snapshot, TypeSnapshot

_stream_ids = itertools.count(1)

# Served to Delta streams only: a SotW stream gets the virtual hosts inside whole route tables (VHDS).
_DELTA_ONLY = frozenset({urls.VIRTUAL_HOST})


@dataclass
class Nack:
    version: str  # the version the proxy refused
    error: str
    at: float  # wall-clock seconds


@dataclass
class TypeState:
    """One type URL on one stream."""

    type_url: str
    subscribed: bool = False  # a request for this type arrived
    wildcard: bool = False  # all resources of the type (legacy wildcard or "*")
    names: frozenset[str] = frozenset()  # explicit subscription when not wildcard
    sent_version: str = ""
    sent_target: str = ""  # the snapshot version the last response moves to (differs while clusters linger)
    sent_nonce: str = ""
    sent_names: frozenset[str] = frozenset()  # names in the last response
    # What the proxy holds now, by name; replaced with each response, never changed in place (acks share it)
    sent_resources: Mapping[str, Resource] = field(default_factory=dict)
    lingering: frozenset[str] = frozenset()  # removed clusters still sent until routes stop naming them
    sent_at: float = 0.0  # monotonic
    awaiting_ack: bool = False
    resend: bool = False  # send again even when unchanged (a changed cluster warms only on fresh endpoints)
    refresh: set[str] = field(default_factory=set)  # Delta: names to send again even when unchanged
    reported_absent: set[str] = field(default_factory=set)  # Delta: names told absent (removed_resources)
    acked_resources: Mapping[str, Resource] = field(default_factory=dict)  # what the proxy acked, by name
    held: Mapping[str, str] = field(default_factory=dict)  # Delta: name -> version (hash) the proxy holds
    # Delta: the type snapshot whose resources the proxy holds exactly, when it does. `held` and
    # `sent_resources` are then that snapshot's maps, shared by every stream in step with it (`held` is
    # changed only through `own_held`, which takes the stream out of step), and what a change sends is
    # the two snapshots' diff, computed once for all of them.
    in_step: TypeSnapshot | None = EMPTY
    in_flight: dict[str, str] = field(default_factory=dict)  # Delta: earlier unanswered nonce -> its version
    acked_version: str = ""
    acked_at: float = 0.0  # wall-clock seconds
    nack: Nack | None = None

    def subscribe(self, names: list[str], *, legacy_wildcard_allowed: bool) -> frozenset[str]:
        """Apply a request's names; returns the names that were not subscribed before."""
        explicit = frozenset(n for n in names if n != "*")
        if "*" in names:
            self.wildcard = True
        elif not names:
            # Legacy wildcard: no names on the first request means all, and ACKs of it repeat no names.
            self.wildcard = legacy_wildcard_allowed and (not self.subscribed or self.wildcard)
        else:
            self.wildcard = False
        added = explicit - self.names
        self.names = explicit
        self.subscribed = True
        return added

    def own_held(self) -> dict[str, str]:
        """`held`, to change in place: the stream's own copy, out of step from now on."""
        self.in_step = None
        if not isinstance(self.held, dict):
            self.held = dict(self.held)
        return self.held

    def sent_hashes(self) -> dict[str, str]:
        return {name: resource.hash for name, resource in self.sent_resources.items()}

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "acked_version": self.acked_version or None,
            "sent_version": self.sent_version or None,
            "awaiting_ack": self.awaiting_ack,
            "subscription": "*" if self.wildcard else sorted(self.names),
        }
        if self.lingering:
            entry["lingering"] = sorted(self.lingering)
        if self.acked_at:
            entry["acked_at"] = iso_time(self.acked_at)
        if self.nack is not None:
            entry["last_nack"] = {"version": self.nack.version, "error": self.nack.error, "at": iso_time(self.nack.at)}
        return entry


@dataclass
class StreamState:
    """One ADS stream. `group` is known after the first request, which must carry the node."""

    peer: str
    kind: str = "sotw"
    stream_id: int = field(default_factory=lambda: next(_stream_ids))
    node_id: str = ""
    node_cluster: str = ""
    group: Group | None = None
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def type(self, type_url: str) -> TypeState:
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = TypeState(type_url)
        return state

    def next_nonce(self) -> str:
        return f"{self.stream_id}-{next(self._nonces)}"

    def pending(self, snapshot: Snapshot) -> list[str]:
        """The type URLs of `snapshot` (its group's, served now) this stream does not hold yet, in push order.

        Envoy subscribes one type after another (endpoints after clusters, route tables after listeners,
        virtual hosts after route tables), so what it subscribed so far says nothing about the rest: a type
        with resources for this stream's protocol is pending until subscribed and acked at its version, and
        a subscribed type, even an empty one, until acked at its version. A Delta stream acks a type's
        version too (`system_version_info`, the route tables' the same as in SotW), whatever part of it
        the proxy asked for."""
        behind = []
        for type_url, served in snapshot.types.items():
            state = self.types.get(type_url)
            if state is not None and state.subscribed:
                if state.acked_version != served.version:
                    behind.append(type_url)
            elif served.resources and (type_url not in _DELTA_ONLY or self.kind == "delta"):
                behind.append(type_url)
        return behind

    def synced(self, snapshot: Snapshot | None) -> bool:
        """The proxy holds everything its group is served now (`snapshot`; None: nothing is, so not synced)."""
        return snapshot is not None and not self.pending(snapshot)

    def status(self, snapshot: Snapshot | None) -> dict[str, Any]:
        pending = self.pending(snapshot) if snapshot is not None else []
        return {
            "stream": self.stream_id,
            "kind": self.kind,
            "node_id": self.node_id,
            "cluster": self.node_cluster,
            "region": self.group.region if self.group else None,
            "role": self.group.role if self.group else None,
            "peer": self.peer,
            "connected_at": iso_time(self.connected_at),
            "last_seen": iso_time(self.last_seen),
            "synced": snapshot is not None and not pending,
            "pending": [urls.short_type(url) for url in pending],
            "types": {urls.short_type(url): state.status() for url, state in sorted(self.types.items())},
        }


def iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"
