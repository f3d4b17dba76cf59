"""A ConfigMap volume as kubelet writes it, for tests of config reload under Kubernetes.

Kubelet's AtomicWriter (k8s.io/kubernetes/pkg/volume/util/atomic_writer.go) lays a ConfigMap out as:

    NAME -> ..data/NAME                         one visible symlink per key
    ..data -> ..2026_11_27_16_00_00.123456789   the current payload
    ..2026_11_27_16_00_00.123456789/NAME        the files themselves

A key projected to a path in a folder (`items: [{key: k, path: teams/a.yaml}]`) is written as
`..<timestamp>/teams/a.yaml`, and the visible entry is the folder: `teams -> ..data/teams`.

kubelet updates it by writing a new timestamped directory, pointing a new symlink `..data_tmp` at it,
renaming `..data_tmp` over `..data` (the one atomic step), deleting the old directory, and then
adding the visible symlinks of new keys and removing those of keys gone. `ConfigMapVolume` does
exactly those steps, in that order, with the same names.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"


class ConfigMapVolume:
    """The mount point `root` of one ConfigMap (or projected) volume."""

    def __init__(self, root: Path, files: Mapping[str, str], *, pause: float = 0.0) -> None:
        """`pause`: seconds between kubelet's steps (0: back to back), so that a watcher sees them
        in separate batches, as it may when kubelet is slow."""
        self.root = root
        self.pause = pause
        self.root.mkdir(parents=True, exist_ok=True)
        self.visible: set[str] = set()
        self.swaps = 0
        self.update(files)

    def path(self, key: str) -> Path:
        """The path a container is given: the visible symlink."""
        return self.root / key

    def update(self, files: Mapping[str, str]) -> None:
        """Replace the whole payload with `files` (path -> text), as kubelet does on a ConfigMap change."""
        for key in files:
            if key.startswith((".", "/")) or ".." in key.split("/"):
                raise ValueError(f"{key!r} is not a path kubelet would write (relative, no leading dot, no ..)")
        visible = {key.split("/")[0] for key in files}
        old = self.root / os.readlink(self.root / DATA) if (self.root / DATA).is_symlink() else None
        # 1. the new payload, in a fresh hidden timestamped directory
        new = self.root / self._timestamped_name()
        new.mkdir(mode=0o755)
        for key, text in files.items():
            (new / key).parent.mkdir(parents=True, exist_ok=True)
            (new / key).write_text(text)
        self._step()
        # 2. `..data_tmp` -> the new directory (relative, as kubelet writes it)
        tmp = self.root / DATA_TMP
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(new.name)
        self._step()
        # 3. the atomic step: rename `..data_tmp` over `..data`
        os.rename(tmp, self.root / DATA)
        self._step()
        # 4. the old payload is removed
        if old is not None:
            shutil.rmtree(old)
        self._step()
        # 5. visible symlinks (one per top-level name) for new paths, and none for paths gone
        for name in sorted(visible - self.visible):
            (self.root / name).symlink_to(Path(DATA) / name)
        for name in sorted(self.visible - visible):
            (self.root / name).unlink()
        self.visible = visible
        self.swaps += 1

    def _step(self) -> None:
        if self.pause and self.swaps:
            time.sleep(self.pause)

    def _timestamped_name(self) -> str:
        # kubelet: "..2006_01_02_15_04_05." + a random suffix; a counter keeps two swaps apart here
        while True:
            stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S")
            name = f"..{stamp}.{time.time_ns() % 1_000_000_000:09d}{self.swaps}"
            if not (self.root / name).exists():
                return name
