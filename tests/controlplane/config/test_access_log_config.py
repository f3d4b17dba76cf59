"""The top-level `access_log:`: on by default, `off`, or a mapping; in one file only."""

from __future__ import annotations

import pytest

from controlplane.config.load import parse_sources
from controlplane.config.model import AccessLog, Tracing
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

LISTENER = "listeners: [{name: public, address: 127.0.0.1, port: 10080}]\n"


def messages(*texts: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source(f"f{index}.yaml", text) for index, text in enumerate(texts)])
    return [str(error) for error in caught.value.errors]


def test_absent_means_json_on_stdout() -> None:
    assert parse_sources([Source("a.yaml", LISTENER)]).access_log == AccessLog("json", None, False)


def test_off_turns_it_off() -> None:
    assert parse_sources([Source("a.yaml", LISTENER + "access_log: off\n")]).access_log is None


def test_a_mapping_sets_format_path_and_subject() -> None:
    text = LISTENER + "access_log: {format: text, path: /var/log/envoy/access.log, subject: true}\n"
    assert parse_sources([Source("a.yaml", text)]).access_log == AccessLog("text", "/var/log/envoy/access.log", True)


@pytest.mark.parametrize(("value", "expected"), [
    ("{format: xml}", "f0.yaml:2:22: access_log.format: 'xml' is not one of json, text"),
    ("{path: logs/access.log}", "f0.yaml:2:20: access_log.path: 'logs/access.log' is not an absolute path"),
    ("{path: /var/log/}", "f0.yaml:2:20: access_log.path: '/var/log/' is not a file path"),
    ("on", "f0.yaml:2:13: access_log:"),
    ("{subject: yes please}", "f0.yaml:2:23: access_log.subject:"),
])
def test_bad_values_are_named_with_their_place(value: str, expected: str) -> None:
    (message,) = messages(LISTENER + f"access_log: {value}\n")
    assert message.startswith(expected), message


def test_given_in_two_files_is_an_error() -> None:
    (message,) = messages(LISTENER + "access_log: off\n", "access_log: {format: text}\n")
    assert message.startswith("f1.yaml:1:13: access_log: `access_log` is already given at f0.yaml:2:13"), message


SERVICES = """services:
  - {name: otel, protocol: grpc, endpoints: [{address: 127.0.0.1:4317, region: eu}]}
  - {name: web, endpoints: [{address: 127.0.0.1:8080, region: eu}]}
regions: [eu]
"""


def test_tracing_defaults_to_one_percent_and_pavilion_edge() -> None:
    config = parse_sources([Source("a.yaml", LISTENER + SERVICES + "tracing: {service: otel}\n")])
    assert config.tracing == Tracing("otel", 1.0, "pavilion-edge")
    assert parse_sources([Source("a.yaml", LISTENER)]).tracing is None


def test_tracing_sampling_is_a_percent() -> None:
    text = LISTENER + SERVICES + "tracing: {service: otel, sampling: 0.25%, service_name: edge-eu}\n"
    assert parse_sources([Source("a.yaml", text)]).tracing == Tracing("otel", 0.25, "edge-eu")


@pytest.mark.parametrize(("value", "expected"), [
    ("{service: otel, sampling: 150%}", "access_log.yaml:6:36: tracing.sampling: '150%' is more than 100%"),
    ("{service: otel, sampling: '0.5'}", "access_log.yaml:6:36: tracing.sampling: '0.5' is not a percent"),
    ("{service: web}", "access_log.yaml:6:20: tracing.service: service 'web' has protocol http1"),
    ("{service: nope}", "access_log.yaml:6:20: tracing.service: unknown service 'nope'"),
])
def test_bad_tracing_is_named_with_its_place(value: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("access_log.yaml", LISTENER + SERVICES + f"tracing: {value}\n")])
    (message,) = [str(error) for error in caught.value.errors]
    assert message.startswith(expected), message
