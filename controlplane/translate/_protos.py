"""Small protobuf builders every translation module shares."""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration from float seconds, rounded to the nanosecond so 0.1 + 0.2 gives one byte string."""
    result = duration_pb2.Duration()
    result.FromNanoseconds(round(seconds * 1e9))
    return result


def uint32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def boolean(value: bool) -> wrappers_pb2.BoolValue:
    return wrappers_pb2.BoolValue(value=value)


def packed(message: Message) -> any_pb2.Any:
    """`message` in an Any, serialized deterministically so nested maps cannot change the bytes."""
    result = any_pb2.Any()
    result.Pack(message, deterministic=True)
    return result


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Fetch a resource over the same ADS stream that delivered the one naming it."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def header_setting_filter(name: str, header: str, value: str, *, on_response: bool) -> hcm_pb2.HttpFilter:
    """An HTTP filter (Envoy's header_mutation, under its own `name`) setting `header` to `value` (an Envoy
    format string) on every request, or with `on_response` every response, replacing any value there."""
    option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=header, value=value),
                                        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    mutation = [mutation_rules_pb2.HeaderMutation(append=option)]
    mutations = (header_mutation_pb2.Mutations(response_mutations=mutation) if on_response
                 else header_mutation_pb2.Mutations(request_mutations=mutation))
    return hcm_pb2.HttpFilter(name=name, typed_config=packed(header_mutation_pb2.HeaderMutation(mutations=mutations)))


def route_enabled_filter(name: str, idle: Message) -> hcm_pb2.HttpFilter:
    """An HTTP filter that runs only on routes giving it a config of their own (Envoy's route-based filter
    chain: `disabled` in the chain, turned on by a route's `typed_per_filter_config[name]`, which replaces
    `idle` whole). `idle` is the chain's own config, which Envoy requires and never applies."""
    return hcm_pb2.HttpFilter(name=name, typed_config=packed(idle), disabled=True)
