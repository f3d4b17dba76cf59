"""`error_responses: {format: problem_json}` → every HttpConnectionManager's local_reply_config: gRPC requests,
direct responses and redirects pass untouched, ext_authz refusals carry its reason, every other reply of 400
or more becomes RFC 9457 problem details with the status's title and Envoy's request id."""

from __future__ import annotations

from dataclasses import replace
from http import HTTPStatus

from envoy.config.accesslog.v3 import accesslog_pb2 as log_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from controlplane.config.model import ErrorResponses
from controlplane.translate._error_responses import NO_ROUTE_DETAIL, PROBLEM_STATUSES
from tests.controlplane.translate.sample import sample_config
from tests.controlplane.translate.test_access_log import managers
from tests.controlplane.translate.test_http3 import listeners, manager, with_http3

GE, EQ = log_pb2.ComparisonFilter.GE, log_pb2.ComparisonFilter.EQ


def local_reply(hcm: hcm_pb2.HttpConnectionManager) -> hcm_pb2.LocalReplyConfig:
    assert hcm.HasField("local_reply_config")
    config: hcm_pb2.LocalReplyConfig = hcm.local_reply_config
    assert not config.HasField("body_format")  # no fallback: a reply no mapper formats keeps Envoy's body
    return config


def body_of(mapper: hcm_pb2.ResponseMapper) -> dict[str, object]:
    override = mapper.body_format_override
    assert override.content_type == "application/problem+json" and override.omit_empty_values
    return json_format.MessageToDict(override.json_format)


def statuses(condition: log_pb2.AccessLogFilter) -> list[tuple[int, int]]:
    """The (op, status) comparisons of a mapper's filter, and-ed ones included."""
    parts = list(condition.and_filter.filters) if condition.HasField("and_filter") else [condition]
    return [(p.status_code_filter.comparison.op, p.status_code_filter.comparison.value.default_value)
            for p in parts if p.HasField("status_code_filter")]


def flags(condition: log_pb2.AccessLogFilter) -> list[str]:
    return [flag for p in condition.and_filter.filters if p.HasField("response_flag_filter")
            for flag in p.response_flag_filter.flags]


def test_absent_leaves_envoys_own_bodies() -> None:
    assert not any(hcm.HasField("local_reply_config") for hcm in managers(sample_config()))


def test_grpc_requests_direct_responses_and_redirects_come_first_and_are_not_rewritten() -> None:
    config = replace(sample_config(), error_responses=ErrorResponses())
    for hcm in managers(config):
        first = local_reply(hcm).mappers[0]
        assert not first.HasField("body_format_override") and not first.HasField("body")
        assert not first.headers_to_add and not first.HasField("status_code")
        grpc, direct = first.filter.or_filter.filters
        assert grpc.header_filter.header.name == "content-type"
        assert grpc.header_filter.header.string_match.prefix == "application/grpc"
        cel = cel_pb2.ExpressionFilter()
        assert direct.extension_filter.typed_config.Unpack(cel)
        assert direct.extension_filter.name == "envoy.access_loggers.extension_filters.cel"
        assert cel.expression == "response.code_details == 'direct_response'"


def test_ext_authz_refusals_give_its_reason_as_detail() -> None:
    (hcm, *_) = managers(replace(sample_config(), error_responses=ErrorResponses()))
    refusals = [m for m in local_reply(hcm).mappers if flags(m.filter) == ["UAEX"]]
    assert [statuses(m.filter) for m in refusals] == [[(EQ, code)] for code in (400, 401, 403, 503)]
    for mapper in refusals:
        (_, code), = statuses(mapper.filter)
        assert body_of(mapper) == {"type": "about:blank", "title": HTTPStatus(code).phrase,
                                   "status": "%RESPONSE_CODE%",
                                   "detail": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%",
                                   "request_id": "%REQ(X-REQUEST-ID)%"}


def test_every_other_error_is_a_problem_titled_by_its_status_then_one_without_title() -> None:
    (hcm, *_) = managers(replace(sample_config(), error_responses=ErrorResponses()))
    mappers = [m for m in local_reply(hcm).mappers[1:] if flags(m.filter) in ([], ["NR"])]
    no_route, *by_status, rest = mappers
    assert flags(no_route.filter) == ["NR"] and body_of(no_route)["detail"] == NO_ROUTE_DETAIL
    assert [statuses(m.filter) for m in by_status] == [[(EQ, code)] for code in PROBLEM_STATUSES]
    for code, mapper in zip(PROBLEM_STATUSES, by_status, strict=True):
        assert body_of(mapper) == {"type": "about:blank", "title": HTTPStatus(code).phrase,
                                   "status": "%RESPONSE_CODE%", "detail": "%LOCAL_REPLY_BODY%",
                                   "request_id": "%REQ(X-REQUEST-ID)%"}
    assert statuses(rest.filter) == [(GE, 400)] and "title" not in body_of(rest)
    # Nothing under 400 is matched: a 2xx or 3xx Envoy makes (a redirect of a path) keeps its body.
    assert all(code >= 400 for m in local_reply(hcm).mappers[1:] for _, code in statuses(m.filter))


def test_the_http3_twin_has_the_same_local_reply_config() -> None:
    config = replace(with_http3(), error_responses=ErrorResponses())
    found = listeners(config)
    tcp, udp = manager(found["public"]), manager(found["public-h3"])
    assert udp.codec_type == hcm_pb2.HttpConnectionManager.HTTP3
    assert udp.local_reply_config == tcp.local_reply_config and local_reply(udp).mappers
