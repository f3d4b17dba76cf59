"""docs/route-yaml.md stays true to the code: its field tables are the generated ones, and every
example error line is one a fixture really produces."""

from __future__ import annotations

import re
from pathlib import Path

from controlplane.config.reference import field_tables
from tests.controlplane.config.fixtures_bad import bad_files, expected_errors

DOC = Path(__file__).resolve().parents[3] / "docs" / "route-yaml.md"
PLACE = re.compile(r"\S+\.ya?ml:\d+:\d+")


def test_field_tables_are_generated_from_the_spec() -> None:
    assert field_tables() in DOC.read_text(encoding="utf-8"), (
        "docs/route-yaml.md is out of date: paste `python -m controlplane.config.reference` into it")


def _without_places(line: str) -> str:
    """`path: message` with every FILE:LINE:COL replaced, so example and fixture compare."""
    rest = PLACE.sub("<place>", line).removeprefix("<place>: ")
    return re.sub(r"that starts at \d+:\d+", "that starts at <place>", rest)


def test_example_errors_are_real() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("Examples of each kind of problem", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    examples = [_without_places(line) for line in block.splitlines() if line]
    real = {_without_places(line) for path in bad_files() for line in expected_errors(path)}
    assert len(examples) >= 15
    assert [e for e in examples if e not in real] == []
