"""Hand-made xDS resources and a toy translator, so snapshot, cache and server tests need no route YAML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from controlplane import resources as urls


def cluster(name: str, timeout_ms: int = 1000) -> cluster_pb2.Cluster:
    message = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    message.connect_timeout.FromMilliseconds(timeout_ms)
    message.eds_cluster_config.eds_config.ads.SetInParent()
    return message


def endpoints(name: str, port: int, region: str = "") -> endpoint_pb2.ClusterLoadAssignment:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = message.endpoints.add()
    group.locality.region = region
    address = group.lb_endpoints.add().endpoint.address.socket_address
    address.address, address.port_value = "127.0.0.1", port
    return message


def listener(name: str, port: int, route_name: str) -> listener_pb2.Listener:
    message = listener_pb2.Listener(name=name)
    address = message.address.socket_address
    address.address, address.port_value = "127.0.0.1", port
    # The route table name is kept in metadata: tests only need the name to reach the snapshot.
    message.metadata.filter_metadata["test"].fields["route"].string_value = route_name
    return message


def route_table(name: str, clusters: Sequence[str], *, own_hosts: bool = False,
                paths: Mapping[str, str] | None = None) -> route_pb2.RouteConfiguration:
    """One route per cluster (prefix `/<cluster>` unless `paths` says), all in one `*` virtual host, or
    with `own_hosts` each in a virtual host of its own (`<cluster>.test`)."""
    message = route_pb2.RouteConfiguration(name=name)
    shared = None if own_hosts else message.virtual_hosts.add(name="all", domains=["*"])
    for target in clusters:
        host = shared or message.virtual_hosts.add(name=f"{target}.test", domains=[f"{target}.test"])
        entry = host.routes.add(name=target)
        entry.match.prefix = (paths or {}).get(target, f"/{target}")
        entry.route.cluster = target
    return message


@dataclass(frozen=True)
class ToyConfig:
    """Services with one port each; the port of a group's region is `port + offset[region]`."""

    services: Mapping[str, int] = field(default_factory=dict)
    offset: Mapping[str, int] = field(default_factory=dict)
    timeout_ms: int = 1000
    own_hosts: bool = False  # each service's route in a virtual host of its own
    paths: Mapping[str, str] = field(default_factory=dict)  # service -> its route's prefix


def toy_translate(config: ToyConfig, region: str, role: str = "edge") -> dict[str, list[Message]]:
    names = sorted(config.services)
    return {
        urls.CLUSTER: [cluster(name, config.timeout_ms) for name in names],
        urls.ENDPOINT: [endpoints(name, port + config.offset.get(region, 0), region)
                        for name, port in sorted(config.services.items())],
        urls.LISTENER: [listener("public", 10080, "public")],
        urls.ROUTE: [route_table("public", names, own_hosts=config.own_hosts, paths=config.paths)],
    }
