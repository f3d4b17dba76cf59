"""The top-level `error_responses:`: absent or `format: envoy` changes nothing; `problem_json`; one file only."""

from __future__ import annotations

import pytest

from controlplane.config.load import parse_sources
from controlplane.config.model import ErrorResponses
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

LISTENER = "listeners: [{name: public, address: 127.0.0.1, port: 10080}]\n"


def messages(*texts: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source(f"f{index}.yaml", text) for index, text in enumerate(texts)])
    return [str(error) for error in caught.value.errors]


def test_absent_or_envoy_keeps_envoys_own_bodies() -> None:
    assert parse_sources([Source("a.yaml", LISTENER)]).error_responses is None
    text = LISTENER + "error_responses: {format: envoy}\n"
    assert parse_sources([Source("a.yaml", text)]).error_responses is None


def test_problem_json() -> None:
    text = LISTENER + "error_responses: {format: problem_json}\n"
    assert parse_sources([Source("a.yaml", text)]).error_responses == ErrorResponses("problem_json")


@pytest.mark.parametrize(("value", "expected"), [
    ("{format: html}", "f0.yaml:2:27: error_responses.format: 'html' is not one of envoy, problem_json"),
    ("{}", "f0.yaml:2:18: error_responses.format: required field 'format' is missing"),
    ("{format: problem_json, type_base: 'https://x'}", "f0.yaml:2:41: error_responses.type_base: unknown field"),
    ("problem_json", "f0.yaml:2:18: error_responses:"),
])
def test_bad_values_are_named_with_their_place(value: str, expected: str) -> None:
    (message,) = messages(LISTENER + f"error_responses: {value}\n")
    assert message.startswith(expected), message


def test_given_in_two_files_is_an_error() -> None:
    (message,) = messages(LISTENER + "error_responses: {format: problem_json}\n",
                          "error_responses: {format: envoy}\n")
    assert message.startswith("f1.yaml:1:18: error_responses: `error_responses` is already given at "
                              "f0.yaml:2:18"), message
