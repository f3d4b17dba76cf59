"""`pavilion validate DIR`: one line per problem on stdout, exit 1; else a summary and exit 0."""

from __future__ import annotations

import argparse
import sys

from controlplane.config.load import parse_sources
from controlplane.config.model import Config
from pavilion.config_files import read_sources
from pavilion.errors import ConfigErrors

__all__ = ["run_validate"]


def run_validate(args: argparse.Namespace) -> int:
    try:
        sources = read_sources(args.directory)
        config = parse_sources(sources)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error)
        print(f"{len(exc.errors)} problem{'s' if len(exc.errors) != 1 else ''} found", file=sys.stderr)
        return 1
    if not getattr(args, "no_envoy", False):
        problems = _envoy_problems(config)
        if problems:
            for line in problems:
                # check_with_envoy names the route entry when it can; otherwise the line is "envoy: ..."
                print(f"{args.directory}: {line}" if line.startswith("envoy: ") else line)
            return 1
    from controlplane.config_warnings import config_warnings

    for line in config_warnings(config):
        print(line, file=sys.stderr)
    print(f"ok: {_count(len(sources), 'file')}, {_count(len(config.listeners), 'listener')}, "
          f"{_count(len(config.services), 'service')}, {_count(len(config.routes), 'route')}")
    return 0


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
