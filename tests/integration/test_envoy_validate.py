"""The real `envoy --mode validate` on translated config, including what only Envoy refuses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import EnvoyNotFound, check_with_envoy, find_envoy
from tests.controlplane.translate.sample import sample_config
from tests.procs import ENVOY, PAVILION

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# RE2 compiles this, and so does Python, but its program (425) is larger than Envoy's limit (100).
HEAVY_REGEX = "/(abc|def|ghi|jkl){30}"


def gateway_with(tmp_path: Path, extra_routes: str) -> Path:
    directory = tmp_path / "gateway"
    shutil.copytree(REPO / "examples" / "gateway", directory)
    (directory / "routes" / "zz-extra.yaml").write_text(extra_routes)
    return directory


def test_representative_config_is_accepted_by_envoy() -> None:
    assert check_with_envoy(sample_config(), ENVOY) == []


def test_example_gateway_is_accepted_by_envoy() -> None:
    assert check_with_envoy(load_config(REPO / "examples" / "gateway"), ENVOY) == []


def test_envoy_rejection_names_the_route_entry(tmp_path: Path) -> None:
    directory = gateway_with(tmp_path, f"""routes:
  - name: fine
    match: {{prefix: /fine}}
    service: accounts
  - name: heavy
    match: {{regex: "{HEAVY_REGEX}"}}
    service: accounts
""")
    config = load_config(directory)  # our own checks let it through: only Envoy knows its limit
    problems = check_with_envoy(config, ENVOY)
    assert len(problems) == 1, problems
    location, field, rest = problems[0].split(": ", 2)
    assert location.startswith(str(directory / "routes" / "zz-extra.yaml") + ":5:")
    assert field == "routes.heavy"
    assert "program size" in rest


def test_pavilion_validate_prints_envoy_problem_and_fails(tmp_path: Path) -> None:
    directory = gateway_with(tmp_path, f"""routes:
  - name: heavy
    match: {{regex: "{HEAVY_REGEX}"}}
    service: accounts
""")
    done = subprocess.run([PAVILION, "validate", str(directory)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "zz-extra.yaml:2:" in done.stdout and "routes.heavy" in done.stdout and "program size" in done.stdout


def test_missing_envoy_is_a_clear_error() -> None:
    with pytest.raises(EnvoyNotFound, match="not an executable"):
        find_envoy("/nonexistent/envoy")
