"""The whole translation of sample_config() against golden text-proto files.

After an intended change of the output, regenerate and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/controlplane/translate/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, text_format

from controlplane import resources as urls
from controlplane.translate import translate
from tests.controlplane.translate.sample import REGIONS, sample_config

GOLDEN = Path(__file__).parent / "golden"


def render(region: str) -> str:
    """Every resource in ADS order as text proto, Any payloads expanded so the golden file is readable."""
    resources = translate(sample_config(), region)
    parts = []
    for type_url in urls.ADS_ORDER:
        for message in resources[type_url]:
            text = text_format.MessageToString(message, descriptor_pool=descriptor_pool.Default())
            parts.append(f"# {type_url}\n{text}")
    return "\n".join(parts)


@pytest.mark.parametrize("region", REGIONS)
def test_translation_matches_golden(region: str) -> None:
    path = GOLDEN / f"{region}.textproto"
    text = render(region)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"translation differs from {path.name}; if intended, rerun with UPDATE_GOLDEN=1"
