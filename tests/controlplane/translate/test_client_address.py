"""A listener's `client_address` → the PROXY protocol listener filter (first, the only one: no tls_inspector
ahead of it), and where the connection manager takes the client from: `use_remote_address` with
`xff_num_trusted_hops`, or the XFF detection extension with `xff_trusted_cidrs` (then with the peer appended,
a client's own x-envoy-external-address and x-request-id removed early and Envoy's own set by a filter);
nothing changes on a listener without it."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_pb2
from envoy.extensions.http.original_ip_detection.xff.v3 import xff_pb2

from controlplane.config.model import (
    Backend,
    ClientAddress,
    Config,
    Cors,
    Endpoint,
    Listener,
    ListenerTls,
    LocalRateLimit,
    Match,
    Route,
    Service,
)
from controlplane.translate._client_address import (
    EARLY_MUTATION,
    EXTERNAL_ADDRESS_FILTER,
    PROXY_PROTOCOL_FILTER,
    XFF_DETECTION,
)
from controlplane.translate._local_ratelimit import LISTENER_FILTER
from tests.controlplane.translate.sample import translated

GUARD = LocalRateLimit(requests=5, unit="second", burst=5, per_client_ip=True)
TLS = ListenerTls(b"CERT", b"KEY")


def config(client: ClientAddress | None, *, tls: ListenerTls | None = None, redirect: bool = False) -> Config:
    endpoint = (Endpoint("127.0.0.1", 9001, "eu-west"),)
    listeners = (
        Listener("public", "127.0.0.1", 10443, client_address=client, tls=tls, local_rate_limit=GUARD),
        Listener("plain", "127.0.0.1", 10080, client_address=client if redirect else None,
                 https_port=10443 if redirect else None),
    )
    routes = (Route("a", "public", Match(prefix="/"), (Backend("accounts"),),
                    cors=Cors(exact_origins=("https://app.example",))),)
    return Config(("eu-west",), listeners, (Service("accounts", endpoint),), routes)


def listener(cfg: Config, name: str = "public") -> listener_pb2.Listener:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == name]
    return item


def manager(cfg: Config, name: str = "public") -> hcm_pb2.HttpConnectionManager:
    result = hcm_pb2.HttpConnectionManager()
    assert listener(cfg, name).filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def proxy_protocol(item: listener_pb2.Listener) -> proxy_protocol_pb2.ProxyProtocol:
    (only,) = item.listener_filters
    assert only.name == PROXY_PROTOCOL_FILTER
    result = proxy_protocol_pb2.ProxyProtocol()
    assert only.typed_config.Unpack(result)
    return result


def test_without_client_address_the_peer_is_the_client_and_nothing_else_changes() -> None:
    hcm = manager(config(None))
    assert hcm.use_remote_address.value is True
    assert hcm.xff_num_trusted_hops == 0
    assert not hcm.original_ip_detection_extensions and not hcm.early_header_mutation_extensions
    assert not listener(config(None)).listener_filters
    assert EXTERNAL_ADDRESS_FILTER not in [f.name for f in hcm.http_filters]


def test_proxy_protocol_required_and_optional() -> None:
    required = proxy_protocol(listener(config(ClientAddress(proxy_protocol="required"))))
    assert required.allow_requests_without_proxy_protocol is False
    assert not required.disallowed_versions  # v1 and v2
    assert required.stat_prefix == "public"
    optional = proxy_protocol(listener(config(ClientAddress(proxy_protocol="optional"))))
    assert optional.allow_requests_without_proxy_protocol is True
    # The PROXY protocol alone leaves X-Forwarded-For untrusted: the header's client is the TCP peer.
    hcm = manager(config(ClientAddress(proxy_protocol="required")))
    assert (hcm.use_remote_address.value, hcm.xff_num_trusted_hops) == (True, 0)


def test_on_a_tls_listener_the_proxy_filter_is_the_only_listener_filter_and_no_chain_match_needs_another() -> None:
    item = listener(config(ClientAddress(proxy_protocol="required"), tls=TLS))
    proxy_protocol(item)  # the only listener filter: nothing reads the first bytes before it
    (chain,) = item.filter_chains
    # A filter_chain_match on SNI or transport protocol would make Envoy add a tls_inspector of its own.
    assert not chain.HasField("filter_chain_match")
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"


def test_a_redirect_to_https_listener_gets_the_proxy_filter_too() -> None:
    item = listener(config(ClientAddress(proxy_protocol="required"), redirect=True), "plain")
    assert proxy_protocol(item).allow_requests_without_proxy_protocol is False


def test_trusted_hops() -> None:
    hcm = manager(config(ClientAddress(trusted_hops=2)))
    assert (hcm.use_remote_address.value, hcm.xff_num_trusted_hops) == (True, 2)
    assert not hcm.original_ip_detection_extensions
    assert EXTERNAL_ADDRESS_FILTER not in [f.name for f in hcm.http_filters]  # Envoy sets it on edge requests


def test_trusted_cidrs_use_the_xff_extension_and_keep_the_external_address_envoys_own() -> None:
    hcm = manager(config(ClientAddress(proxy_protocol="optional", trusted_cidrs=("10.0.0.0/8", "2001:db8::/32"))))
    # Envoy refuses the extension beside use_remote_address or xff_num_trusted_hops.
    assert not hcm.HasField("use_remote_address") and hcm.xff_num_trusted_hops == 0
    (extension,) = hcm.original_ip_detection_extensions
    assert extension.name == XFF_DETECTION
    xff = xff_pb2.XffConfig()
    assert extension.typed_config.Unpack(xff)
    assert [(c.address_prefix, c.prefix_len.value) for c in xff.xff_trusted_cidrs.cidrs] == [
        ("10.0.0.0", 8), ("2001:db8::", 32)]
    assert xff.xff_num_trusted_hops == 0
    assert xff.HasField("skip_xff_append") and xff.skip_xff_append.value is False
    (early,) = hcm.early_header_mutation_extensions
    assert early.name == EARLY_MUTATION
    removal = early_pb2.HeaderMutation()
    assert early.typed_config.Unpack(removal)
    assert [m.remove for m in removal.mutations] == ["x-envoy-external-address", "x-request-id"]
    names = [f.name for f in hcm.http_filters]
    # First, before CORS and the local limit's guard.
    assert names[:3] == [EXTERNAL_ADDRESS_FILTER, "envoy.filters.http.cors", LISTENER_FILTER]
    setter = header_mutation_pb2.HeaderMutation()
    assert hcm.http_filters[0].typed_config.Unpack(setter)
    (mutation,) = setter.mutations.request_mutations
    assert mutation.append.header.key == "x-envoy-external-address"
    assert mutation.append.header.value == "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    assert mutation.append.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    # The PROXY protocol still reads the peer the CIDRs are compared with.
    assert proxy_protocol(listener(config(ClientAddress(proxy_protocol="optional", trusted_cidrs=("10.0.0.0/8",)))))


def test_other_listeners_are_unchanged() -> None:
    plain = manager(config(ClientAddress(trusted_cidrs=("10.0.0.0/8",))), "plain")
    assert plain.use_remote_address.value is True
    assert not plain.original_ip_detection_extensions
