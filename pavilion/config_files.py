"""Config files as every Pavilion loader reads them: a file, or a directory of YAML files searched
recursively in a fixed order, each read whole with the name its errors will carry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pavilion.errors import ConfigError, ConfigErrors, Location

__all__ = ["SUFFIXES", "Source", "read_sources", "yaml_files"]

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Source:
    """One file's text and the name errors give it."""

    name: str
    text: str


def yaml_files(path: str | Path) -> list[Path]:
    """The files `load_config(path)` reads, in merge order. Hidden files and folders are skipped.

    Symlinked folders are followed: a ConfigMap key projected to `teams/a.yaml` is mounted as the
    symlink `teams -> ..data/teams`. The hidden `..data` and timestamped folders it points into are
    not (each file would be read twice), and no real folder is walked twice (a link to an ancestor).
    """
    root = Path(path)
    if root.is_file():
        return [root]
    found: list[Path] = []
    walked: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            subfolders.clear()
            continue
        walked.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(Path(folder, name) for name in names
                     if not name.startswith(".") and Path(name).suffix in SUFFIXES and Path(folder, name).is_file())
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_sources(path: str | Path) -> list[Source]:
    root = Path(path)
    if not root.exists():
        raise ConfigErrors([ConfigError("no such file or directory", location=Location(str(root)))])
    files = yaml_files(root)
    if not files:
        raise ConfigErrors([ConfigError(f"no {' or '.join('*' + s for s in SUFFIXES)} files here",
                                        location=Location(str(root)))])
    sources: list[Source] = []
    errors: list[ConfigError] = []
    for file in files:
        try:
            sources.append(Source(str(file), file.read_text(encoding="utf-8-sig")))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(ConfigError(f"cannot read: {exc}", location=Location(str(file))))
    if errors:
        raise ConfigErrors(errors)
    return sources
