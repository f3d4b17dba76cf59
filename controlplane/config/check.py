"""`pavilion validate DIR`: one line per problem on stdout, exit 1; else a summary and exit 0.

`--format github` writes the same findings as GitHub Actions workflow commands, so a pull request that
breaks the route YAML shows each problem on its own line of the diff; `--format json` is for other CI
systems and bots. Warnings (stderr in text) are findings of level "warning" there; the exit code is
the same in every format.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass

from controlplane.config.load import parse_sources
from controlplane.config.model import Config
from pavilion.config_files import read_sources
from pavilion.errors import ConfigErrors
from pavilion.versions import config_version

__all__ = ["Finding", "finding", "run_validate"]

# Every error and warning line starts with the place it is about (config_warnings says so too).
_PLACED = re.compile(r"(?P<file>[^\n]+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.*)", re.DOTALL)


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str  # the whole line as text prints it, place included
    file: str = ""
    line: int = 0
    column: int = 0


def finding(level: str, text: str, directory: str) -> Finding:
    """A finding from one line of text output; one without a place is about the whole directory."""
    placed = _PLACED.fullmatch(text)
    if placed is None:
        return Finding(level, text, directory)
    return Finding(level, text, placed["file"], int(placed["line"]), int(placed["column"]))


def run_validate(args: argparse.Namespace) -> int:
    directory = args.directory
    found: list[Finding] = []
    config: Config | None = None
    sources = []
    try:
        sources = read_sources(directory)
        config = parse_sources(sources)
    except ConfigErrors as exc:
        found = [finding("error", str(error), directory) for error in exc.errors]
    if config is not None and not getattr(args, "no_envoy", False):
        # check_with_envoy names the route entry when it can; otherwise the line is "envoy: ..."
        found = [finding("error", f"{directory}: {line}" if line.startswith("envoy: ") else line, directory)
                 for line in _envoy_problems(config)]
    if config is not None and not found:
        from controlplane.config_warnings import config_warnings

        found = [finding("warning", line, directory) for line in config_warnings(config)]
    errors = [f for f in found if f.level == "error"]
    summary, version = "", None
    if config is not None and not errors:
        # The version the control plane serves this directory as: `pavilion status --version` waits for it.
        version = config_version(config)
        summary = (f"ok: {_count(len(sources), 'file')}, {_count(len(config.listeners), 'listener')}, "
                   f"{_count(len(config.services), 'service')}, {_count(len(config.routes), 'route')}; "
                   f"config version {version}")
    _REPORTERS[getattr(args, "format", "text")](found, summary, version)
    return 1 if errors else 0


def _text(found: list[Finding], summary: str, _version: str | None) -> None:
    for item in found:
        print(item.message, file=sys.stdout if item.level == "error" else sys.stderr)
    errors = sum(item.level == "error" for item in found)
    if errors:
        print(f"{errors} problem{'s' if errors != 1 else ''} found", file=sys.stderr)
    else:
        print(summary)


def _github(found: list[Finding], summary: str, _version: str | None) -> None:
    """Workflow commands (docs.github.com, "Workflow commands for GitHub Actions"): ::error file=F,line=L::M."""
    for item in found:
        properties = [f"file={_property(item.file)}"]
        if item.line:
            properties += [f"line={item.line}", f"col={item.column}"]
        properties.append("title=pavilion validate")
        print(f"::{item.level} {','.join(properties)}::{_data(item.message)}")
    if summary:
        print(summary)


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def _json(found: list[Finding], summary: str, version: str | None) -> None:
    print(json.dumps({"ok": not any(item.level == "error" for item in found), "summary": summary,
                      "version": version, "findings": [asdict(item) for item in found]}, indent=2))


# The choices of `--format` (controlplane/cli.py lists the same three names).
_REPORTERS = {"text": _text, "github": _github, "json": _json}


def _envoy_problems(config: Config) -> list[str]:
    """Envoy's own verdict on the translated config; skipped (with a note on stderr) when impossible."""
    try:
        from controlplane.envoy_check import EnvoyNotFound, check_with_envoy
    except ImportError as exc:
        print(f"envoy check skipped: {exc}", file=sys.stderr)
        return []
    try:
        return check_with_envoy(config)
    except EnvoyNotFound as exc:
        print(f"envoy check skipped: {exc}", file=sys.stderr)
        return []


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
