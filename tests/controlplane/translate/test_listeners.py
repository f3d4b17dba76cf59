from __future__ import annotations

from envoy.config.core.v3 import protocol_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from tests.controlplane.translate.sample import sample_config, translated

HCM = hcm_pb2.HttpConnectionManager


def manager(role: str = "edge", name: str = "public") -> hcm_pb2.HttpConnectionManager:
    listeners = translated(listener_pb2.Listener, sample_config(), "eu-west", role)
    (listener,) = [item for item in listeners if item.name == name]
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    result = HCM()
    assert network_filter.typed_config.Unpack(result)
    return result


def test_one_listener_per_yaml_listener_on_its_address() -> None:
    listeners = translated(listener_pb2.Listener, sample_config(), "eu-west")
    assert [(item.name, item.address.socket_address.address, item.address.socket_address.port_value)
            for item in listeners] == [("internal", "127.0.0.1", 10081), ("public", "127.0.0.1", 10080)]
    assert {item.per_connection_buffer_limit_bytes.value for item in listeners} == {32 * 1024}


def test_routes_come_over_ads_under_the_listener_name() -> None:
    hcm = manager()
    assert hcm.rds.route_config_name == "public"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.stat_prefix == "public"
    assert hcm.codec_type == HCM.AUTO


def test_router_is_the_last_http_filter() -> None:
    assert [f.name for f in manager().http_filters][-1] == "envoy.filters.http.router"


def test_edge_hardening() -> None:
    hcm = manager()
    assert hcm.use_remote_address.value is True
    assert hcm.normalize_path.value is True
    assert hcm.merge_slashes is True
    assert hcm.path_with_escaped_slashes_action == HCM.UNESCAPE_AND_REDIRECT
    assert hcm.strip_any_host_port is True
    assert hcm.server_header_transformation == HCM.OVERWRITE
    assert hcm.preserve_external_request_id is False
    underscores = hcm.common_http_protocol_options.headers_with_underscores_action
    assert underscores == protocol_pb2.HttpProtocolOptions.REJECT_REQUEST


def test_a_non_edge_role_trusts_the_forwarding_proxy() -> None:
    hcm = manager(role="sidecar")
    assert hcm.use_remote_address.value is False
    assert hcm.preserve_external_request_id is True
