"""Run every benchmark module of this package, one process each, in name order."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path


def modules() -> list[str]:
    here = [str(Path(__file__).parent)]
    return sorted(info.name for info in pkgutil.iter_modules(here) if not info.name.startswith("_"))


def main() -> int:
    failed = []
    for name in modules():
        print(f"\n=== bench.{name} ===", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
