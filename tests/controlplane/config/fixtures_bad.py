"""Reads the bad fixtures: each file says, in comments at its top, every error line it must give
(`# error: LINE:COL: path: message`, `{file}` standing for its path) and whether the JSON Schema
alone rejects it (`# schema: reject|accept|none`)."""

from __future__ import annotations

from pathlib import Path

BAD = Path(__file__).parent / "fixtures" / "bad"


def bad_files() -> list[Path]:
    return sorted(BAD.glob("*.yaml"))


def expected_errors(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    prefix = "# error: "
    return [f"{path}:{line[len(prefix):]}".replace("{file}", str(path)) for line in lines if line.startswith(prefix)]


def schema_verdict(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    return first.removeprefix("# schema: ").strip()
