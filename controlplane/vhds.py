"""Route tables in the form Delta streams get them: VHDS, each virtual host a resource of its own.

Over RDS the smallest unit of routes is a listener's whole RouteConfiguration, so an edit of one
route re-sends every route of the listener. A Delta stream gets each table as a shell instead: the
same RouteConfiguration with no virtual hosts and `vhds` pointing at ADS. Envoy then watches
VirtualHost resources by namespace, the table's name (namespace matching in Envoy's
source/common/router/vhds.cc; Envoy 1.40 sends that subscription with no names, and sorts what
arrives into its tables itself): the server sends every virtual host named `<table>/<virtual host>`
(controlplane.server.delta says when), and after an edit only the virtual hosts that changed. Envoy keeps
VHDS virtual hosts by their `name` and drops them by the resource names in `removed_resources`, so
the resource name and `VirtualHost.name` are the same string.

Routes are grouped into virtual hosts by the hosts they serve (controlplane.translate._routes): a
route with hosts of its own is one resource, routes sharing a host share one. Envoy picks exactly
one virtual host per request, so routes of one host cannot be split further. SotW streams keep the
tables whole: Envoy accepts VHDS only over Delta.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

_OVER_ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                           resource_api_version=config_source_pb2.ApiVersion.V3)


def virtual_host_name(table: str, host: str) -> str:
    return f"{table}/{host}"


def namespace(name: str) -> str:
    """The table a virtual host resource belongs to: its name up to the last `/`, as Envoy matches it."""
    return name.rpartition("/")[0]


def split_table(table: route_pb2.RouteConfiguration) -> tuple[route_pb2.RouteConfiguration,
                                                               list[route_components_pb2.VirtualHost]]:
    """The table's shell (everything but its virtual hosts, plus `vhds`) and its named virtual hosts."""
    shell = route_pb2.RouteConfiguration()
    shell.CopyFrom(table)
    shell.ClearField("virtual_hosts")
    shell.vhds.config_source.CopyFrom(_OVER_ADS)
    hosts = []
    for host in table.virtual_hosts:
        item = route_components_pb2.VirtualHost()
        item.CopyFrom(host)
        item.name = virtual_host_name(table.name, host.name)
        hosts.append(item)
    return shell, hosts
