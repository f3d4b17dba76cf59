"""The top-level `rollout:`: stages of known regions, each named once, and a bake; in one file only."""

from __future__ import annotations

import pytest

from controlplane.config.load import parse_sources
from controlplane.config.model import Rollout
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

BASE = "regions: [eu-west, us-east, ap-south]\nlisteners: [{name: public, address: 127.0.0.1, port: 10080}]\n"


def messages(*texts: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source(f"f{index}.yaml", text) for index, text in enumerate(texts)])
    return [str(error) for error in caught.value.errors]


def test_absent_means_every_region_at_once() -> None:
    assert parse_sources([Source("a.yaml", BASE)]).rollout is None


def test_a_stage_is_a_region_or_a_list_of_regions() -> None:
    text = BASE + "rollout: {stages: [eu-west, [us-east, ap-south]], bake: 5m}\n"
    assert parse_sources([Source("a.yaml", text)]).rollout == Rollout((("eu-west",), ("us-east", "ap-south")), 300.0)


@pytest.mark.parametrize(("value", "expected"), [
    ("{stages: [eu-wst], bake: 1m}",
     "f0.yaml:3:20: rollout.stages[0]: unknown region 'eu-wst'; did you mean 'eu-west'? (add it to `regions`)"),
    ("{stages: [eu-west, [us-east, eu-west]], bake: 1m}",
     "f0.yaml:3:39: rollout.stages[1][1]: region 'eu-west' is listed twice (first at f0.yaml:3:20)"),
    ("{stages: [], bake: 1m}", "f0.yaml:3:19: rollout.stages: needs at least 1 item"),
    ("{stages: [[]], bake: 1m}", "f0.yaml:3:20: rollout.stages[0]: needs at least 1 item"),
    ("{stages: [eu-west]}", "f0.yaml:3:10: rollout.bake: required field 'bake' is missing"),
    ("{stages: [eu-west], bake: soon}", "f0.yaml:3:36: rollout.bake: 'soon' is not a duration"),
])
def test_bad_values_are_named_with_their_place(value: str, expected: str) -> None:
    (message,) = messages(BASE + f"rollout: {value}\n")
    assert message.startswith(expected), message


def test_given_in_two_files_is_an_error() -> None:
    first = BASE + "rollout: {stages: [eu-west], bake: 1m}\n"
    (message,) = messages(first, "rollout: {stages: [us-east], bake: 1m}\n")
    assert message.startswith("f1.yaml:1:10: rollout: `rollout` is already given at f0.yaml:3:10"), message


def test_hold_is_off_unless_given() -> None:
    text = BASE + "rollout: {stages: [eu-west], bake: 1m, hold: true}\n"
    assert parse_sources([Source("a.yaml", text)]).rollout == Rollout((("eu-west",),), 60.0, hold=True)
    text = BASE + "rollout: {stages: [eu-west], bake: 1m}\n"
    rollout = parse_sources([Source("a.yaml", text)]).rollout
    assert rollout is not None and not rollout.hold
