"""YAML text to located nodes: YAML 1.2 scalars, and the libyaml fast path agreeing with the pure parser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pavilion import yaml_nodes
from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import Mapping, Scalar, Sequence, parse_documents

ROOT = Path(__file__).resolve().parents[3]
CORPUS = [*sorted((ROOT / "examples" / "gateway").rglob("*.yaml")),
          *sorted((Path(__file__).parent / "fixtures").rglob("*.yaml"))]
TRICKY = [
    "a: {address: 127.0.0.1:9001, region: eu-west}\n",  # libyaml (YAML 1.1) refuses this; 1.2 reads it
    'a: {"b":c}\n',
    "a: b\u2028c\n",
    "on: [yes, no, off, 010, 0o10, 0x1F, 1e3, .inf, ~, null, '', true, 'true']\n",
    "a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n",
    "a: &x {b: 1}\nc: *x\nd:\n  <<: *x\n  e: 2\n",
    "---\na: 1\n---\n---\n- 2\n",
    "a:\tb\n",
    "é€: {x: 1, yy: é€z}\n",
]


def test_libyaml_is_installed() -> None:
    assert yaml_nodes._LIBYAML, "ruamel.yaml.clib is a dependency: without it loading is ~5x slower"


@pytest.mark.parametrize("text", [p.read_text(encoding="utf-8") for p in CORPUS] + TRICKY)
def test_fast_path_reads_like_the_pure_parser(text: str) -> None:
    try:
        pure = parse_documents(text, "f.yaml", fast=False)
    except ConfigError as exc:
        with pytest.raises(ConfigError) as caught:
            parse_documents(text, "f.yaml")
        assert str(caught.value) == str(exc)  # errors always come from the pure parser
        return
    assert parse_documents(text, "f.yaml") == pure


def test_yaml_1_2_scalars() -> None:
    (doc,) = parse_documents(TRICKY[3], "f.yaml")
    assert isinstance(doc, Mapping)
    ((key, value),) = doc.items
    assert key.text == "on" and key.loc == Location("f.yaml", 1, 1)
    assert isinstance(value, Sequence)
    values = [item.value for item in value.items if isinstance(item, Scalar)]
    assert values == ["yes", "no", "off", 10, 8, 31, 1000.0, math.inf, None, None, "", True, "true"]


def test_flow_mapping_with_address_keeps_locations() -> None:
    (doc,) = parse_documents(TRICKY[0], "f.yaml")
    assert isinstance(doc, Mapping)
    inner = doc.items[0][1]
    assert isinstance(inner, Mapping)
    assert [(k.text, k.loc.column, v.loc.column) for k, v in inner.items] == [("address", 5, 14), ("region", 30, 38)]
    assert [v.value for _, v in inner.items if isinstance(v, Scalar)] == ["127.0.0.1:9001", "eu-west"]


def test_syntax_error_location() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_documents("a: [1, 2\nb: 3\n", "f.yaml")
    assert caught.value.location == Location("f.yaml", 2, 2)
    assert caught.value.message.startswith("YAML syntax error: ")


def test_fast_path_is_taken_for_plain_block_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[bool] = []
    real = yaml_nodes._parser

    def spy(*, pure: bool) -> object:
        used.append(pure)
        return real(pure=pure)

    monkeypatch.setattr(yaml_nodes, "_parser", spy)
    parse_documents("routes:\n  - name: a\n    match: {prefix: /a}\n", "f.yaml")
    assert used == [False]
    parse_documents(TRICKY[0], "f.yaml")
    assert used == [False, False, True]
