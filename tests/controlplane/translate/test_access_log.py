"""`access_log:` → an Envoy access logger on every HttpConnectionManager, whose lines never copy a
header that may carry a credential, nor the query."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from controlplane.config.model import AccessLog, Config, Listener, ListenerTls
from controlplane.translate._access_log import log_fields
from tests.controlplane.translate.sample import sample_config, translated

OPERATOR = re.compile(r"%([A-Z_0-9]+)(\(([^)]*)\))?(:\d+)?%")
# The only request or response headers a line may read: none of them can carry a credential.
SAFE_HEADERS = {":METHOD", ":AUTHORITY", "USER-AGENT", "X-REQUEST-ID", "X-ENVOY-UPSTREAM-SERVICE-TIME"}
HEADER_OPERATORS = {"REQ", "RESP", "TRAILER", "REQUEST_HEADER", "RESPONSE_HEADER", "RESPONSE_TRAILER"}
EXPECTED_KEYS = [
    "start_time", "method", "path", "protocol", "status", "response_flags", "details", "bytes_received",
    "bytes_sent", "duration_ms", "upstream_service_time_ms", "upstream_cluster", "upstream_host", "route",
    "request_id", "authority", "user_agent", "client_address", "tenant", "client",
]


def managers(config: Config) -> list[hcm_pb2.HttpConnectionManager]:
    result = []
    for item in translated(listener_pb2.Listener, config, "eu-west"):
        for chain in item.filter_chains:
            for network_filter in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                assert network_filter.typed_config.Unpack(hcm)
                result.append(hcm)
    return result


def json_format_of(hcm: hcm_pb2.HttpConnectionManager) -> dict[str, str]:
    (logger,) = hcm.access_log
    assert logger.name == "envoy.access_loggers.stdout"
    stdout = stream_pb2.StdoutAccessLog()
    assert logger.typed_config.Unpack(stdout)
    fields: dict[str, str] = json_format.MessageToDict(stdout.log_format.json_format)
    return fields


def test_every_listener_logs_json_to_stdout_by_default() -> None:
    config = sample_config()
    assert config.access_log == AccessLog()
    found = managers(config)
    assert len(found) == len(config.listeners) >= 2
    for hcm in found:
        assert sorted(json_format_of(hcm)) == sorted(EXPECTED_KEYS)


def test_the_line_names_the_request_without_its_query_and_the_caller_by_ext_authz_metadata() -> None:
    fields = json_format_of(managers(sample_config())[0])
    assert fields["path"] == "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"
    assert fields["status"] == "%RESPONSE_CODE%"
    assert fields["route"] == "%ROUTE_NAME%"
    assert fields["tenant"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:tenant)%"
    assert fields["client"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:client)%"
    assert "subject" not in fields


def _operators(config: Config) -> list[tuple[str, str]]:
    found = []
    for item in config.listeners:
        for _key, value in log_fields(item, config.access_log or AccessLog()):
            found += [(m.group(1), m.group(3) or "") for m in OPERATOR.finditer(value)]
    return found


@pytest.mark.parametrize("settings", [AccessLog(), AccessLog(format="text", subject=True)])
def test_no_operator_can_copy_a_credential_or_the_query(settings: AccessLog) -> None:
    config = replace(sample_config(), access_log=settings)
    operators = _operators(config)
    assert operators, "the pattern must find the operators"
    headers = [argument for name, argument in operators if name in HEADER_OPERATORS]
    assert {h.upper() for h in headers} <= SAFE_HEADERS, headers
    # Whole-path operators keep the query; only REQ_WITHOUT_QUERY drops it.
    assert not [name for name, _ in operators if name in {"PATH", "REQUEST_URI", "DOWNSTREAM_PEER_CERT",
                                                          "DOWNSTREAM_PEER_SUBJECT", "DOWNSTREAM_PEER_URI_SAN"}]
    assert all(argument.split(":")[-1] != "PATH" or name == "REQ_WITHOUT_QUERY" for name, argument in operators)
    for hcm in managers(config):
        text = hcm.access_log[0].typed_config.value.decode(errors="replace").lower()
        for secret_header in ("authorization", "dpop", "cookie", "x-api-key", "sec-websocket-protocol"):
            assert secret_header not in text


def test_subject_only_when_asked() -> None:
    config = replace(sample_config(), access_log=AccessLog(subject=True))
    fields = json_format_of(managers(config)[0])
    assert fields["subject"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:subject)%"


def test_tls_listeners_log_the_tls_version_and_certificate_expiry() -> None:
    plain = Listener("plain", "127.0.0.1", 1)
    tls = replace(plain, tls=ListenerTls(b"cert", b"key"))
    assert dict(log_fields(tls, AccessLog())).keys() - dict(log_fields(plain, AccessLog())).keys() == {
        "tls_version", "client_certificate_expires"}


def test_text_format_and_a_file_path() -> None:
    config = replace(sample_config(), access_log=AccessLog(format="text", path="/var/log/envoy/access.log"))
    for hcm in managers(config):
        (logger,) = hcm.access_log
        assert logger.name == "envoy.access_loggers.file"
        file_log = file_pb2.FileAccessLog()
        assert logger.typed_config.Unpack(file_log)
        assert file_log.path == "/var/log/envoy/access.log"
        line = file_log.log_format.text_format_source.inline_string
        assert line.startswith('start_time="%START_TIME%" method="%REQ(:METHOD)%" ') and line.endswith("\n")


def test_off_means_no_logger() -> None:
    config = replace(sample_config(), access_log=None)
    assert all(len(hcm.access_log) == 0 for hcm in managers(config))
