"""`error_responses: {format: problem_json}` → the HttpConnectionManager's `local_reply_config`.

Every reply Envoy makes itself passes through these mappers, the first matching one applies:

1. Left alone (a mapper that rewrites nothing): gRPC requests, whose local replies Envoy turns into a
   trailers-only grpc-status answer carrying the body as grpc-message; and a route's `direct_response`
   and `redirect`, which Envoy also sends as local replies (response code details `direct_response`) but
   whose status and body a platform team chose. No access log filter but CEL sees the details.
2. ext_authz refusals (response flag UAEX): `detail` is ext_authz's reason code (a stable word like
   `expired`, never a token), which it gives as dynamic metadata with each refusal; its headers
   (WWW-Authenticate, DPoP-Nonce, Cache-Control) stay, as every local reply's headers do.
3. Any other reply of 400 or more: `detail` is Envoy's own text ("no healthy upstream"); a request no
   route matches, where Envoy has none, gets one.

`type` is `about:blank` and `title` the status's phrase (RFC 9457 section 4.2.1), so one mapper per
status; a status without a phrase here gets no `title`. Replies under 400 are left alone. A HEAD
request's reply has no body whatever the format (Envoy drops it).
"""

from __future__ import annotations

from http import HTTPStatus

from envoy.config.accesslog.v3 import accesslog_pb2 as log_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as format_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from controlplane.config.model import ErrorResponses
from controlplane.translate._policy import EXT_AUTHZ_FILTER
from controlplane.translate._protos import packed

__all__ = ["NO_ROUTE_DETAIL", "PROBLEM_CONTENT_TYPE", "PROBLEM_STATUSES", "REQUEST_ID_MEMBER", "error_reply_settings"]

PROBLEM_CONTENT_TYPE = "application/problem+json"
REQUEST_ID_MEMBER = "request_id"  # the extension member support looks the access log line up by
# The statuses Envoy's filters, the router and ext_authz answer with; others still get a body, without title.
PROBLEM_STATUSES = (400, 401, 403, 404, 405, 408, 413, 414, 421, 426, 429, 431, 500, 501, 502, 503, 504)
EXT_AUTHZ_STATUSES = (400, 401, 403, 503)  # extauthz/decision.py, and Envoy's status_on_error
NO_ROUTE_DETAIL = "no route matches the request's host and path"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"


def error_reply_settings(settings: ErrorResponses | None) -> dict[str, hcm_pb2.LocalReplyConfig]:
    """The connection manager's `local_reply_config` for `settings`, as keyword arguments; none when absent."""
    if settings is None:
        return {}
    authz_detail = f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:reason)%"
    mappers = [hcm_pb2.ResponseMapper(filter=_left_alone())]
    mappers += [_mapper(_all(_status(log_pb2.ComparisonFilter.EQ, code), _flag("UAEX")), code, authz_detail)
                for code in EXT_AUTHZ_STATUSES]
    # Envoy's 404 for a request no route matches has an empty body: say why.
    mappers.append(_mapper(_all(_status(log_pb2.ComparisonFilter.EQ, 404), _flag("NR")), 404, NO_ROUTE_DETAIL))
    mappers += [_mapper(_status(log_pb2.ComparisonFilter.EQ, code), code, "%LOCAL_REPLY_BODY%")
                for code in PROBLEM_STATUSES]
    mappers.append(_mapper(_status(log_pb2.ComparisonFilter.GE, 400), None, "%LOCAL_REPLY_BODY%"))
    return {"local_reply_config": hcm_pb2.LocalReplyConfig(mappers=mappers)}


def _mapper(condition: log_pb2.AccessLogFilter, code: int | None, detail: str) -> hcm_pb2.ResponseMapper:
    body = struct_pb2.Struct()
    body.update({"type": "about:blank", "status": "%RESPONSE_CODE%", "detail": detail,
                 REQUEST_ID_MEMBER: "%REQ(X-REQUEST-ID)%"})
    if code is not None:
        body["title"] = HTTPStatus(code).phrase
    # omit_empty_values: no `detail` where ext_authz gave no reason (it failed rather than refused). An empty
    # text is not left out, only a missing value.
    return hcm_pb2.ResponseMapper(filter=condition, body_format_override=format_pb2.SubstitutionFormatString(
        json_format=body, content_type=PROBLEM_CONTENT_TYPE, omit_empty_values=True))


def _left_alone() -> log_pb2.AccessLogFilter:
    grpc = route_components_pb2.HeaderMatcher(
        name="content-type", string_match=string_pb2.StringMatcher(prefix="application/grpc"))
    direct = cel_pb2.ExpressionFilter(expression="response.code_details == 'direct_response'")
    return log_pb2.AccessLogFilter(or_filter=log_pb2.OrFilter(filters=[
        log_pb2.AccessLogFilter(header_filter=log_pb2.HeaderFilter(header=grpc)),
        log_pb2.AccessLogFilter(extension_filter=log_pb2.ExtensionFilter(name=CEL_FILTER, typed_config=packed(direct))),
    ]))


def _flag(flag: str) -> log_pb2.AccessLogFilter:
    return log_pb2.AccessLogFilter(response_flag_filter=log_pb2.ResponseFlagFilter(flags=[flag]))


def _status(op: log_pb2.ComparisonFilter.Op.ValueType, code: int) -> log_pb2.AccessLogFilter:
    # Envoy wants a runtime key for each comparison; nothing sets these.
    value = base_pb2.RuntimeUInt32(default_value=code, runtime_key=f"pavilion.error_responses.status_{code}")
    return log_pb2.AccessLogFilter(status_code_filter=log_pb2.StatusCodeFilter(
        comparison=log_pb2.ComparisonFilter(op=op, value=value)))


def _all(*filters: log_pb2.AccessLogFilter) -> log_pb2.AccessLogFilter:
    return log_pb2.AccessLogFilter(and_filter=log_pb2.AndFilter(filters=list(filters)))
