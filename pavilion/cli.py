"""The `pavilion` command. Each package adds its own subcommands through a `cli.register` function,
so this module knows the commands' names only through them and stays free of service logic."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pavilion import __version__

# Modules that define `register(subparsers)`; each subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    "controlplane.cli",
    "extauthz.cli",
    "extauthz.token_cli",
    "ratelimit.cli",
    "pavilion.launcher_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pavilion", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"pavilion {__version__}")
    parser.add_argument("--log-level", default=None, help="debug, info, warning or error (env PAVILION_LOG_LEVEL)")
    parser.add_argument("--log-format", default=None, choices=["json", "console"],
                        help="log line format (env PAVILION_LOG_FORMAT)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # that package has no commands yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pavilion.log import configure_logging
    from pavilion.settings import Settings

    base = Settings.from_env(log_level=args.log_level, log_format=args.log_format)
    configure_logging(base.log_level, base.log_format)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
