"""`pavilion validate` and `pavilion schema` through the real CLI entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.config.model import Config
from pavilion.cli import main
from pavilion.versions import config_version
from tests.controlplane.config.fixtures_bad import BAD, expected_errors

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway"
VERSION = config_version(load_config(str(EXAMPLE)))


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--no-envoy", str(EXAMPLE)]) == 0
    # The version is the one the control plane serves the directory as (`pavilion status --version`).
    assert capsys.readouterr().out == f"ok: 5 files, 1 listener, 5 services, 5 routes; config version {VERSION}\n"


def test_validate_prints_one_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    bad = BAD / "unknown_service.yaml"
    assert main(["validate", "--no-envoy", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == expected_errors(bad)
    assert "2 problems found" in captured.err


def test_validate_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", "--no-envoy", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'nope'}: no such file or directory\n"


def test_envoy_problems_fail_validation(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import controlplane.envoy_check as envoy_check

    seen: list[Config] = []

    def rejects(config: Config) -> list[str]:
        seen.append(config)
        return ["envoy: bad listener", "a.yaml:3:5: routes.r: envoy: invalid domain"]

    monkeypatch.setattr(envoy_check, "check_with_envoy", rejects)
    assert main(["validate", str(EXAMPLE)]) == 1
    # Envoy's lines that name no entry get the directory; located lines are printed as they are.
    assert capsys.readouterr().out == f"{EXAMPLE}: envoy: bad listener\na.yaml:3:5: routes.r: envoy: invalid domain\n"
    assert [s.name for s in seen[0].services] == ["extauthz", "ratelimit", "accounts", "payments", "payments-canary"]


def test_envoy_check_skipped_when_module_missing(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "controlplane.envoy_check", None)  # import fails
    assert main(["validate", str(EXAMPLE)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("envoy check skipped: ")
    assert captured.out.startswith("ok: ")


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {
        "regions", "listeners", "services", "routes", "tenants", "extauthz", "ratelimit", "access_log", "tracing",
        "error_responses", "rollout", "delegations"}


def test_validate_for_github_actions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """One workflow command per problem, on its file and line; '%', newlines, ':' and ',' escaped."""
    bad = BAD / "unknown_service.yaml"
    assert main(["validate", "--no-envoy", "--format", "github", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected_errors(bad)) == 2
    for line, expected in zip(lines, expected_errors(bad), strict=True):
        file, number, column, _rest = expected.split(":", 3)
        assert line == (f"::error file={file},line={number},col={column},title=pavilion validate::"
                         f"{expected.replace('%', '%25')}")
    odd = tmp_path / "a,b%.yaml"
    odd.write_text("routes: [{name: x, match: {prefix: /}, service: nowhere}]\n")
    assert main(["validate", "--no-envoy", "--format", "github", str(odd)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith(f"::error file={str(tmp_path).replace(':', '%3A')}/a%2Cb%25.yaml,line=1,col=")
                         for line in lines)


def test_validate_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    bad = BAD / "unknown_service.yaml"
    assert main(["validate", "--no-envoy", "--format", "json", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["summary"] == ""
    assert [f["message"] for f in report["findings"]] == expected_errors(bad)
    first = report["findings"][0]
    assert first["level"] == "error" and first["file"] == str(bad) and first["line"] > 0 and first["column"] > 0
    assert main(["validate", "--no-envoy", "--format", "json", str(EXAMPLE)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"ok": True, "summary": f"ok: 5 files, 1 listener, 5 services, 5 routes; config version {VERSION}",
                      "version": VERSION, "findings": []}


def test_warnings_are_annotations_too(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import controlplane.config_warnings as config_warnings

    monkeypatch.setattr(config_warnings, "config_warnings",
                        lambda config: ["routes/a.yaml:4:5: routes[a].hosts: warning: soon"])
    assert main(["validate", "--no-envoy", "--format", "github", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "::warning file=routes/a.yaml,line=4,col=5,title=pavilion validate::routes/a.yaml:4:5: routes[a].hosts: "
        "warning: soon", f"ok: 5 files, 1 listener, 5 services, 5 routes; config version {VERSION}"]
