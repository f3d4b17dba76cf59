"""`access_log:` → one Envoy access logger on every HttpConnectionManager.

A line names the request without ever copying a secret: the path goes through
REQ_WITHOUT_QUERY (a query may carry `access_token=...` or personal data), and the only request
headers read are the method, authority, user agent and request id, never Authorization, DPoP or
Cookie. The caller's identity comes from what ext_authz found in the token (its dynamic metadata,
under the filter's name), not from the token; the subject only when `subject: true`. A rate-limited
request shows `RL` in `response_flags` (`RLSE` when the ratelimit service could not answer).
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as format_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.formatter.req_without_query.v3 import req_without_query_pb2
from google.protobuf import struct_pb2

from controlplane.config.model import AccessLog, Listener
from controlplane.translate._policy import EXT_AUTHZ_FILTER
from controlplane.translate._protos import packed

__all__ = ["FILE_LOGGER", "STDOUT_LOGGER", "access_loggers", "log_fields"]

STDOUT_LOGGER = "envoy.access_loggers.stdout"
FILE_LOGGER = "envoy.access_loggers.file"

_FIELDS = (
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("status", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("details", "%RESPONSE_CODE_DETAILS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration_ms", "%DURATION%"),
    ("upstream_service_time_ms", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("route", "%ROUTE_NAME%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("client_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("tenant", f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:tenant)%"),
    ("client", f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:client)%"),
)
_SUBJECT = ("subject", f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:subject)%")
# Whether a client certificate was shown, and when it expires, without naming whose it is.
_TLS_FIELDS = (
    ("tls_version", "%DOWNSTREAM_TLS_VERSION%"),
    ("client_certificate_expires", "%DOWNSTREAM_PEER_CERT_V_END%"),
)

# REQ_WITHOUT_QUERY is an extension: Envoy refuses the operator unless the format names it.
_WITHOUT_QUERY = extension_pb2.TypedExtensionConfig(name="envoy.formatter.req_without_query",
                                                    typed_config=packed(req_without_query_pb2.ReqWithoutQuery()))


def log_fields(item: Listener, settings: AccessLog) -> tuple[tuple[str, str], ...]:
    """The (key, Envoy command operator) pairs of a line of `item`, in order."""
    fields = _FIELDS + ((_SUBJECT,) if settings.subject else ())
    return fields + (_TLS_FIELDS if item.tls is not None else ())


def access_loggers(item: Listener, settings: AccessLog | None) -> list[accesslog_pb2.AccessLog]:
    """The listener's access loggers: none for `access_log: off`, else one."""
    if settings is None:
        return []
    fields = log_fields(item, settings)
    if settings.format == "json":
        line = format_pb2.SubstitutionFormatString(json_format=_struct(fields), formatters=[_WITHOUT_QUERY])
    else:
        text = " ".join(f'{key}="{operator}"' for key, operator in fields)
        line = format_pb2.SubstitutionFormatString(text_format_source={"inline_string": text + "\n"},
                                                   formatters=[_WITHOUT_QUERY])
    if settings.path is None:
        return [accesslog_pb2.AccessLog(name=STDOUT_LOGGER,
                                        typed_config=packed(stream_pb2.StdoutAccessLog(log_format=line)))]
    logger = file_pb2.FileAccessLog(path=settings.path, log_format=line)
    return [accesslog_pb2.AccessLog(name=FILE_LOGGER, typed_config=packed(logger))]


def _struct(fields: tuple[tuple[str, str], ...]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(dict(fields))
    return result
