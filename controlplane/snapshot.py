"""A frozen, content-hashed set of xDS resources for one node group, serialized once.

Versions are hashes of content only (no clock, no counter), so every replica that translates the
same config produces the same versions, and an Envoy moving between replicas sees no change.
Each resource keeps its own hash, which is its Delta xDS version.

The wire bytes of every resource are prepared here as an encoded `DiscoveryResponse.resources`
field. Protobuf allows a message's fields in any order and concatenated encodings merge, so a
response is `head + b"".join(fields)`: every stream of a group shares the same bytes and a push
costs a concatenation, not a serialization per Envoy.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane import resources as urls
from controlplane.vhds import namespace, split_table

# The field that names a resource, per type: `ClusterLoadAssignment.cluster_name` and not `name`.
_NAME_FIELD = {
    urls.CLUSTER: "name",
    urls.ENDPOINT: "cluster_name",
    urls.LISTENER: "name",
    urls.ROUTE: "name",
    urls.SECRET: "name",
    urls.VIRTUAL_HOST: "name",
    urls.TENANT_POLICY: "id",
    urls.RATE_LIMIT_POLICY: "domain",
}

HASH_CHARS = 16  # 64 bits of sha256: collisions are not a concern at gateway scale


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def resource_name(type_url: str, message: Message) -> str:
    return str(getattr(message, _NAME_FIELD[type_url]))


@dataclass(frozen=True)
class Resource:
    """One resource: its message, its deterministic bytes, their hash, and its encoded response field."""

    name: str
    type_url: str
    message: Message
    serialized: bytes
    hash: str
    response_field: bytes  # `DiscoveryResponse.resources` (field 2) holding the packed Any

    def packed(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.serialized)

    @cached_property
    def delta_field(self) -> bytes:
        """`DeltaDiscoveryResponse.resources` (field 2) holding this resource, versioned by its hash;
        built on first Delta use only, then shared by every Delta stream."""
        entry = discovery_pb2.Resource(name=self.name, version=self.hash, resource=self.packed())
        return bytes(discovery_pb2.DeltaDiscoveryResponse(resources=[entry]).SerializeToString(deterministic=True))


@dataclass(frozen=True)
class TypeSnapshot:
    """Every resource of one type URL, by name in sorted order, and the type's version.

    `delta`: the form Delta streams get instead, when it differs (route tables as VHDS shells, whose
    virtual hosts are the VIRTUAL_HOST type), under the same version."""

    type_url: str
    resources: Mapping[str, Resource]
    version: str
    response_fields: bytes  # every resource's field, in name order: a full-state response body
    delta: TypeSnapshot | None = None

    def select(self, names: Iterable[str]) -> list[Resource]:
        """The resources among `names` that exist, in name order; unknown names are skipped."""
        return [self.resources[name] for name in sorted(set(names)) if name in self.resources]

    @cached_property
    def namespaces(self) -> dict[str, list[str]]:
        """Resource names by namespace (the name up to its last `/`): VHDS subscribes by namespace."""
        grouped: dict[str, list[str]] = {}
        for name in self.resources:
            grouped.setdefault(namespace(name), []).append(name)
        return grouped

    def hashes(self) -> dict[str, str]:
        return {name: resource.hash for name, resource in self.resources.items()}

    @cached_property
    def hash_view(self) -> Mapping[str, str]:
        """Name -> hash, read-only: what a Delta proxy holding exactly this type holds, shared by every
        stream in step with it."""
        return MappingProxyType(self.hashes())

    @cached_property
    def names(self) -> frozenset[str]:
        return frozenset(self.resources)

    @cached_property
    def _diffs(self) -> dict[int, tuple[weakref.ref[TypeSnapshot], TypeDiff]]:
        return {}

    def diff_from(self, older: TypeSnapshot) -> TypeDiff:
        """What a proxy holding exactly `older`'s resources needs to hold this one's: computed once per pair
        and shared by every stream in that state (the older one is referenced weakly: a chain of
        snapshots does not keep every earlier one alive)."""
        if older is self:
            return _NO_DIFF
        known = self._diffs.get(id(older))
        if known is not None and known[0]() is older:
            return known[1]
        before = older.resources
        send = tuple(resource for name, resource in self.resources.items()
                     if (held := before.get(name)) is None or held.hash != resource.hash)
        gone = tuple(name for name in before if name not in self.resources)  # in order, as `older`'s are
        diff = TypeDiff(send, gone)
        if len(self._diffs) >= _DIFFS_KEPT:
            self._diffs.pop(next(iter(self._diffs)))
        self._diffs[id(older)] = (weakref.ref(older), diff)
        return diff


@dataclass(frozen=True)
class TypeDiff:
    """From one TypeSnapshot to another: the resources new or changed (in name order), and the names gone."""

    send: tuple[Resource, ...]
    gone: tuple[str, ...]

    @cached_property
    def delta_fields(self) -> bytes:
        """Every sent resource's Delta field: the body of the response, shared by the streams in step."""
        return b"".join(resource.delta_field for resource in self.send)


_NO_DIFF = TypeDiff((), ())
_DIFFS_KEPT = 8  # streams in step hold one of a few recent snapshots; more means they are not in step


# What a proxy holds of a type before its first response: a Delta stream starts in step with it.
EMPTY = TypeSnapshot(type_url="", resources=MappingProxyType({}), version="", response_fields=b"")


@dataclass(frozen=True)
class Snapshot:
    """The resources of every known type URL; a type with no resources is present and empty."""

    types: Mapping[str, TypeSnapshot]
    version: str

    def type(self, type_url: str) -> TypeSnapshot:
        return self.types[type_url]

    def versions(self) -> dict[str, str]:
        return {type_url: snap.version for type_url, snap in self.types.items()}

    def resource_count(self) -> int:
        return sum(len(snap.resources) for snap in self.types.values())


def build_resource(type_url: str, message: Message) -> Resource:
    expected = type_url.rsplit("/", 1)[-1]
    if message.DESCRIPTOR.full_name != expected:
        raise ValueError(f"a {message.DESCRIPTOR.full_name} cannot be served as {type_url}")
    serialized = message.SerializeToString(deterministic=True)
    packed = any_pb2.Any(type_url=type_url, value=serialized)
    field = discovery_pb2.DiscoveryResponse(resources=[packed]).SerializeToString(deterministic=True)
    return Resource(name=resource_name(type_url, message), type_url=type_url, message=message,
                    serialized=serialized, hash=content_hash(serialized), response_field=field)


def build_type(type_url: str, messages: Sequence[Message], version: str | None = None) -> TypeSnapshot:
    """`version`: the type's version when the caller pins it; by default a hash of every resource's hash."""
    built: dict[str, Resource] = {}
    for message in messages:
        resource = build_resource(type_url, message)
        if resource.name in built:
            raise ValueError(f"two {type_url.rsplit('.', 1)[-1]} resources are named {resource.name!r}")
        built[resource.name] = resource
    ordered = {name: built[name] for name in sorted(built)}
    if version is None:
        digest = "".join(f"{name}\0{resource.hash}\n" for name, resource in ordered.items())
        version = content_hash(digest.encode())
    return TypeSnapshot(
        type_url=type_url, resources=MappingProxyType(ordered), version=version,
        response_fields=b"".join(resource.response_field for resource in ordered.values()))


def build_snapshot(resources: Mapping[str, Sequence[Message]],
                   reuse: Mapping[str, TypeSnapshot] | None = None,
                   versions: Mapping[str, str] | None = None) -> Snapshot:
    """Freeze translate()'s output. Unknown type URLs are a bug in the caller and raise ValueError.

    `reuse`: types already built for another node group, taken as they are (shared, not copied)
    where `resources` has no entry for the type.
    `versions`: type URL -> the version to serve it under instead of its content hash. Pavilion's own
    types carry the config version, so ext_authz and ratelimit report the control plane's version;
    each resource keeps its content hash, so Delta still sends only what changed.
    The Envoy types are always present (empty when not given), and so are the virtual hosts of the
    route tables (`with_virtual_hosts`); a Pavilion type only when given.
    """
    unknown = set(resources) - set(urls.SERVED_ORDER)
    if unknown:
        raise ValueError(f"no xDS type is known by the URL {sorted(unknown)[0]!r}")
    if urls.VIRTUAL_HOST in resources:
        raise ValueError("virtual hosts are derived from the route tables, not given")
    shared = reuse or {}
    pinned = versions or {}
    present = [type_url for type_url in urls.SERVED_ORDER
               if type_url in urls.ADS_ORDER or type_url == urls.VIRTUAL_HOST or type_url in resources
               or type_url in shared]
    types = {type_url: shared[type_url] if type_url in shared and type_url not in resources
             else build_type(type_url, resources.get(type_url, ()), pinned.get(type_url)) for type_url in present}
    if urls.ROUTE in resources or urls.ROUTE not in shared:  # a shared route table brings its virtual hosts
        types[urls.ROUTE], types[urls.VIRTUAL_HOST] = with_virtual_hosts(types[urls.ROUTE])
    digest = "".join(f"{type_url}\0{snap.version}\n" for type_url, snap in types.items())
    return Snapshot(types=MappingProxyType(types), version=content_hash(digest.encode()))


def with_virtual_hosts(routes: TypeSnapshot) -> tuple[TypeSnapshot, TypeSnapshot]:
    """The route tables with their Delta form attached (VHDS shells, same version), and their virtual hosts."""
    shells, hosts = [], []
    for resource in routes.resources.values():
        shell, named = split_table(resource.message)
        shells.append(shell)
        hosts.extend(named)
    return (replace(routes, delta=build_type(urls.ROUTE, shells, routes.version)),
            build_type(urls.VIRTUAL_HOST, hosts))


def delta_response_head(*, type_url: str, version: str, nonce: str, identifier: str,
                        removed: list[str]) -> bytes:
    """The per-stream part of a DeltaDiscoveryResponse; append `Resource.delta_field`s to complete it."""
    head = discovery_pb2.DeltaDiscoveryResponse(system_version_info=version, type_url=type_url, nonce=nonce,
                                                removed_resources=removed)
    head.control_plane.identifier = identifier
    return bytes(head.SerializeToString(deterministic=True))


def response_head(*, type_url: str, version: str, nonce: str, identifier: str) -> bytes:
    """The per-stream part of a DiscoveryResponse; append resource fields to complete it."""
    head = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    head.control_plane.identifier = identifier
    return bytes(head.SerializeToString(deterministic=True))
