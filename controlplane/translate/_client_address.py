"""A listener's `client_address` → Envoy's PROXY protocol listener filter and the connection manager's
client address detection (controlplane/config/client_address.py reads the YAML).

- `proxy_protocol` adds `envoy.filters.listener.proxy_protocol` as the listener's first listener filter,
  versions 1 and 2; `optional` sets `allow_requests_without_proxy_protocol`. It must run before anything
  that reads the connection's first bytes: a `tls_inspector` placed ahead of it would see the PROXY
  header, not a ClientHello. Pavilion's filter chains have no `filter_chain_match`, so Envoy adds no
  tls_inspector of its own, and TLS is read by the transport socket after every listener filter.
  The peer address it sets is what `%DOWNSTREAM_REMOTE_ADDRESS%`, the `remote_address` rate limit
  descriptor, ext_authz's `source.address` and the X-Forwarded-For Envoy appends all use.
- `trusted_hops` keeps `use_remote_address` (an edge request: Envoy strips x-envoy-* headers, sets
  x-envoy-external-address and appends the peer) and sets `xff_num_trusted_hops`.
- `trusted_cidrs` is Envoy's XFF original IP detection extension with `xff_trusted_cidrs`. Envoy refuses
  it beside `use_remote_address` or `xff_num_trusted_hops`, so those two stay unset: the connection
  manager then treats requests as not coming from the edge (it neither sets x-envoy-external-address nor
  appends the peer to X-Forwarded-For), which the docs say.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    header_mutation_pb2 as early_header_mutation_pb2,
)
from envoy.extensions.http.original_ip_detection.xff.v3 import xff_pb2

from controlplane.config.model import Listener
from controlplane.translate._protos import boolean, header_setting_filter, packed, uint32

__all__ = [
    "EARLY_MUTATION", "EXTERNAL_ADDRESS_FILTER", "PROXY_PROTOCOL_FILTER", "XFF_DETECTION", "address_detection",
    "external_address_filters", "listener_filters",
]

PROXY_PROTOCOL_FILTER = "envoy.filters.listener.proxy_protocol"
XFF_DETECTION = "envoy.http.original_ip_detection.xff"
EARLY_MUTATION = "envoy.http.early_header_mutation.header_mutation"
EXTERNAL_ADDRESS_FILTER = "pavilion.external_address"
EXTERNAL_ADDRESS = "x-envoy-external-address"


def listener_filters(item: Listener) -> list[listener_components_pb2.ListenerFilter]:
    """The listener filters of `item`: the PROXY protocol reader when it has `proxy_protocol`, else none."""
    client = item.client_address
    if client is None or client.proxy_protocol is None:
        return []
    config = proxy_protocol_pb2.ProxyProtocol(
        allow_requests_without_proxy_protocol=client.proxy_protocol == "optional",
        stat_prefix=item.name,
    )
    return [listener_components_pb2.ListenerFilter(name=PROXY_PROTOCOL_FILTER, typed_config=packed(config))]


def address_detection(item: Listener, edge: bool) -> dict[str, Any]:
    """The HttpConnectionManager fields that say where the client's address comes from."""
    client = item.client_address
    if client is not None and client.trusted_cidrs:
        cidrs = [_cidr_range(text) for text in client.trusted_cidrs]
        # skip_xff_append false: the peer is appended as with use_remote_address, so an upstream reading
        # X-Forwarded-For from the right meets Envoy's entry first, whoever connected.
        xff = xff_pb2.XffConfig(xff_trusted_cidrs=xff_pb2.XffTrustedCidrs(cidrs=cidrs), skip_xff_append=boolean(False))
        return {
            "original_ip_detection_extensions": [
                extension_pb2.TypedExtensionConfig(name=XFF_DETECTION, typed_config=packed(xff))],
            # Not an edge request to Envoy now, so it would pass a client's own x-envoy-external-address and
            # x-request-id on: remove them before anything reads them (Envoy then generates a request id).
            "early_header_mutation_extensions": [_early_removal()],
        }
    # At the edge the client's address is the TCP peer (the PROXY header's client, when there is one); an
    # X-Forwarded-For entry counts only when as many trusted proxies as `trusted_hops` appended it.
    hops = client.trusted_hops if client is not None else 0
    return {"use_remote_address": boolean(edge or hops > 0), "xff_num_trusted_hops": hops}


def external_address_filters(item: Listener) -> list[hcm_pb2.HttpFilter]:
    """On a `trusted_cidrs` listener, the filter that sets x-envoy-external-address to the client Envoy found,
    as Envoy itself does on an edge request (use_remote_address), so upstreams read it the same way on every
    listener; none elsewhere."""
    client = item.client_address
    if client is None or not client.trusted_cidrs:
        return []
    return [header_setting_filter(EXTERNAL_ADDRESS_FILTER, EXTERNAL_ADDRESS, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                                  on_response=False)]


def _early_removal() -> extension_pb2.TypedExtensionConfig:
    config = early_header_mutation_pb2.HeaderMutation(mutations=[
        mutation_rules_pb2.HeaderMutation(remove=name) for name in (EXTERNAL_ADDRESS, "x-request-id")])
    return extension_pb2.TypedExtensionConfig(name=EARLY_MUTATION, typed_config=packed(config))


def _cidr_range(text: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(text)
    return address_pb2.CidrRange(address_prefix=str(network.network_address), prefix_len=uint32(network.prefixlen))
