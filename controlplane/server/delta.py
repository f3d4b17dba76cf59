"""ADS in Delta (incremental) xDS: `AggregatedDiscoveryService/DeltaAggregatedResources`.

Each resource is versioned by its content hash (the same on every replica), so a response carries
only the resources whose hash differs from what the proxy holds, and `removed_resources` names what
it must drop. The rules (docs/root/api-docs/xds_protocol.rst, "Incremental xDS"):
- subscriptions change by `resource_names_subscribe` / `_unsubscribe`; `*` is the wildcard, and a
  first LDS or CDS request with no names is the legacy wildcard;
- the first request for a type may list `initial_resource_versions` (a reconnect, maybe to another
  replica): what it holds at the version we would send is not sent again;
- a request echoing the latest nonce is an ACK, or a NACK with `error_detail` (a NACK of an earlier
  response still in flight counts too); neither is answered, and a rejected resource version is not
  sent again: the proxy is taken to hold what it was sent, so only a resource whose content changes
  again goes out;
- an explicitly subscribed name we do not have is reported once in `removed_resources`;
- route tables go out in their VHDS form (controlplane.vhds). Envoy (1.40) opens its VirtualHost
  subscription with no names, a legacy wildcard, and sorts the virtual hosts into its tables by
  namespace itself, dropping those of a table it does not watch yet: under the wildcard a proxy
  gets the virtual hosts of the tables it holds, after it acked them, and all of them for a table
  new to it. A name given explicitly stands for the virtual host of that name and, as a namespace,
  for every virtual host of the table of that name;
- the push order (make before break) is `base.AdsStream`'s: a removed cluster is only named in
  `removed_resources` once this stream acked the listeners and routes of the change, and its
  endpoints not before the cluster itself went.

A wildcard stream that holds exactly what a type snapshot served (`TypeState.in_step`, the common
case: every proxy of a group after the same pushes) shares that snapshot's name -> hash map instead
of keeping its own, and a change sends it the diff of the two snapshots, computed once for every
stream in the same state (`TypeSnapshot.diff_from`): its cost per change is what changed, not the
number of resources. Any other stream (a reconnect with versions of its own, a subscription by name,
clusters kept for routes behind) keeps its own maps and compares them with the snapshot, and joins
the shared state again once a response leaves it holding exactly what is served.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from envoy.service.discovery.v3 import discovery_pb2

from controlplane import resources as urls
from controlplane.server.base import AdsStream, lingering_version
from controlplane.server.stream import TypeState
from controlplane.snapshot import EMPTY, Resource, TypeDiff, TypeSnapshot, delta_response_head
from controlplane.vhds import namespace

# Types whose first request without names subscribes to all: CDS and LDS (xds_protocol.rst), and VHDS,
# which Envoy opens with no names.
_LEGACY_WILDCARD = urls.FULL_STATE_TYPES | {urls.VIRTUAL_HOST}


class Changes(NamedTuple):
    send: Sequence[Resource]
    removed: list[str]  # sorted
    whole: bool  # the proxy wants every resource of the served type
    diff: TypeDiff | None  # the shared diff `send` comes from, for a stream in step


class DeltaStream(AdsStream):
    # The last `_changes` (for which type state, under which snapshot): `due` computes it and `send`, which
    # follows at once, reuses it; a request or a send clears it. For a stream out of step, with thousands
    # of resources of a type, it is the main cost of a change.
    _last_changes: tuple[TypeState, object, Changes] | None = None

    def _tables_held(self) -> Collection[str]:
        routes = self.state.types.get(urls.ROUTE)
        return routes.held if routes is not None else {}

    def _served(self, type_url: str) -> TypeSnapshot:
        """The type as Delta streams get it: route tables as VHDS shells, the rest as they are."""
        snap = self.snapshot.type(type_url)  # type: ignore[union-attr]
        return snap.delta or snap

    async def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        self._last_changes = None
        type_state = self.state.type(request.type_url)
        if type_state.sent_nonce and request.response_nonce == type_state.sent_nonce:
            type_state.in_flight.clear()
            if request.HasField("error_detail"):
                self.record_nack(type_state, request.error_detail.message)
            else:
                self.record_ack(type_state)
        elif request.response_nonce in type_state.in_flight:
            # An answer to an earlier response while a later one is in flight: each Delta response is
            # acked on its own, so a refusal of the earlier one counts; an ACK of it tells nothing new.
            refused = type_state.in_flight.pop(request.response_nonce)
            if request.HasField("error_detail"):
                self.record_nack(type_state, request.error_detail.message, refused_version=refused)
        first = not type_state.subscribed
        subscribe, unsubscribe = list(request.resource_names_subscribe), set(request.resource_names_unsubscribe)
        if first:
            type_state.subscribed = True
            type_state.held = dict(request.initial_resource_versions)
            type_state.in_step = None if type_state.held else EMPTY
            type_state.wildcard = "*" in subscribe or (not subscribe and request.type_url in _LEGACY_WILDCARD)
        elif "*" in subscribe:
            type_state.wildcard = True
        if "*" in unsubscribe:
            type_state.wildcard = False
        added = frozenset(subscribe) - {"*"} - type_state.names
        type_state.names = (type_state.names | added) - unsubscribe
        for name in unsubscribe:  # the proxy forgets what it unsubscribed from
            forgotten = [held for held in _held_under(type_state, name) if held in type_state.held]
            if forgotten:
                own = type_state.own_held()
                for held in forgotten:
                    own.pop(held, None)
            if any(held in type_state.sent_resources for held in forgotten):  # a new dict: acks share the old
                type_state.sent_resources = {key: resource for key, resource in type_state.sent_resources.items()
                                             if key not in forgotten}
            type_state.reported_absent.discard(name)
        if not first:
            type_state.refresh |= added  # a newly subscribed name is sent even when the proxy had it

    def _changes(self, type_state: TypeState) -> Changes:
        """What to send and what to name as removed, make before break applied to removals."""
        if self.snapshot is None:
            return Changes([], [], False, None)
        last = self._last_changes
        if last is not None and last[0] is type_state and last[1] is self.snapshot:
            return last[2]
        result = self._compute_changes(type_state)
        self._last_changes = (type_state, self.snapshot, result)
        return result

    def _compute_changes(self, type_state: TypeState) -> Changes:
        snap = self._served(type_state.type_url)
        by_namespace = type_state.type_url == urls.VIRTUAL_HOST
        wanted: Mapping[str, Resource]
        if by_namespace and type_state.wildcard:  # the virtual hosts of the tables the proxy holds
            tables = self._tables_held()
            wanted = snap.resources if all(table in tables for table in snap.namespaces) else {
                name: snap.resources[name] for table in tables for name in snap.namespaces.get(table, ())}
        elif type_state.wildcard:
            wanted = snap.resources
        elif by_namespace:
            wanted = {name: snap.resources[name] for space in type_state.names
                      for name in (*snap.namespaces.get(space, ()), space) if name in snap.resources}
        else:
            wanted = {name: snap.resources[name] for name in type_state.names if name in snap.resources}
        whole = wanted is snap.resources
        held, refresh, base = type_state.held, type_state.refresh, type_state.in_step
        send: Sequence[Resource]
        diff: TypeDiff | None = None
        if whole and base is not None and (not refresh or not base.resources):
            # In step: the diff of the two snapshots, the same for every stream holding `base` (a refresh
            # is moot when the proxy held nothing: everything goes).
            diff = snap.diff_from(base)
            send, removed = diff.send, set(diff.gone)
        else:
            items = wanted.items() if whole else sorted(wanted.items())  # a snapshot's are in order
            if refresh:
                send = [resource for name, resource in items if held.get(name) != resource.hash or name in refresh
                        or (by_namespace and namespace(name) in refresh)]
            else:
                send = [resource for name, resource in items if held.get(name) != resource.hash]
            removed = {name for name in held if name not in wanted}
        if type_state.type_url == urls.CLUSTER and self.routes_behind():
            removed = set()  # CDS: routes may still name a removed cluster
        elif type_state.type_url == urls.ENDPOINT:
            cds = self.state.types.get(urls.CLUSTER)
            if cds is not None:
                removed = {name for name in removed if name not in cds.held}  # a cluster there keeps its endpoints
        reported = type_state.reported_absent
        absent = {name for name in type_state.names if name not in snap.resources and name not in held
                  and not (by_namespace and name in snap.namespaces) and name not in reported}
        if by_namespace and type_state.wildcard:
            # Envoy's VHDS holds a listener's warming until an update of its table's namespace arrives:
            # for a table with no virtual hosts, that update names `<table>/` removed.
            absent |= {f"{table}/" for table in self._tables_held() if table not in snap.namespaces} - reported
        return Changes(send, sorted(removed | absent), whole, diff)

    def due(self, type_state: TypeState) -> bool:
        if self.snapshot is None:
            return False
        routes = self.state.types.get(urls.ROUTE)
        if type_state.type_url == urls.VIRTUAL_HOST and routes is not None and routes.awaiting_ack:
            # Envoy starts watching a table's virtual hosts once it took the table, and drops the ones
            # that come before: they wait for the tables' ACK.
            return False
        changes = self._changes(type_state)
        if changes.send or changes.removed:
            return True
        snap = self._served(type_state.type_url)
        if changes.whole and type_state.in_step is not snap and (
                not changes.diff.gone if changes.diff is not None else len(type_state.held) == len(snap.resources)):
            # The proxy holds exactly this snapshot's content (nothing to send, nothing else held): follow
            # it, so streams in step share one snapshot and keep no older one alive, and a reconnect that
            # held it all already joins them.
            type_state.in_step, type_state.held, type_state.sent_resources = snap, snap.hash_view, snap.resources
        if not type_state.awaiting_ack and type_state.acked_version == type_state.sent_version:
            # Nothing this proxy holds differs from the snapshot (and it took our last response):
            # it is at the snapshot's version. After a NACK it stays at the version it kept.
            target = snap.version
            type_state.sent_version = type_state.sent_target = type_state.acked_version = target
            type_state.lingering = frozenset()
        return False

    async def send(self, type_state: TypeState) -> None:
        if self.snapshot is None:
            return
        snap = self._served(type_state.type_url)
        changes = self._changes(type_state)
        send, removed = changes.send, changes.removed
        if type_state.type_url == urls.CLUSTER:
            self.refresh_endpoints_of({r.name for r in send if r.name in type_state.held})
        elif type_state.type_url == urls.ROUTE and (hosts := self.state.types.get(urls.VIRTUAL_HOST)) is not None:
            # A table new to the proxy gets all its virtual hosts (before VHDS is subscribed, all go anyway).
            new = {r.name for r in send if r.name not in type_state.held}
            hosts.refresh |= new
            hosts.reported_absent -= {f"{table}/" for table in new}  # an empty one is named again
        named = set(removed)
        if changes.diff is not None:  # the proxy holds `in_step`: what it holds beyond `snap` is what went
            lingering = frozenset(changes.diff.gone).difference(named)
            body = changes.diff.delta_fields
        else:
            lingering = frozenset(name for name in type_state.held if name not in snap.resources and name not in named)
            body = b"".join(r.delta_field for r in send)
        nonce = self.state.next_nonce()
        response = delta_response_head(type_url=type_state.type_url, version=snap.version, nonce=nonce,
                                       identifier=self.server.identifier, removed=removed) + body
        await self.context.write(response)
        if type_state.awaiting_ack:
            type_state.in_flight[type_state.sent_nonce] = type_state.sent_version
        # Named once: what the proxy never held (an unknown name, an empty table) or subscribed by name.
        type_state.reported_absent |= {name for name in removed
                                       if name not in type_state.held or name in type_state.names}
        holding: Mapping[str, Resource]
        names: frozenset[str] | None = None
        if changes.whole and not lingering:
            # The proxy holds exactly the served type now: share its maps with every stream in step.
            type_state.in_step, type_state.held = snap, snap.hash_view
            holding, names = snap.resources, snap.names
        else:
            held = type_state.own_held()
            copy = dict(type_state.sent_resources)  # a new dict: the acked one may be the one sent before
            for name in removed:
                held.pop(name, None)
                copy.pop(name, None)
            for resource in send:
                held[resource.name] = resource.hash
                copy[resource.name] = resource
            holding = copy
        type_state.refresh.clear()
        self._last_changes = None
        version = lingering_version(snap.version, lingering)
        self.record_sent(type_state, version=version, target=snap.version, nonce=nonce, held=holding,
                         lingering=lingering, size=len(response), count=len(send), names=names)


def _held_under(type_state: TypeState, name: str) -> list[str]:
    """The held resources a subscribed name stands for: itself, and for virtual hosts its namespace's."""
    if type_state.type_url != urls.VIRTUAL_HOST:
        return [name]
    return [held for held in type_state.held if held == name or namespace(held) == name]
