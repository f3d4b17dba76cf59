"""The stages of a staged rollout (the route YAML's `rollout:`), and how far one has come.

Stage k holds the regions of `rollout.stages[k]`; every other region (and a node without one) is in
the stage after the last named one, released when the last named stage has baked. So stage indexes
run from 0 to `count`, and releasing stage `count` ends the rollout.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Rollout", "Stages"]


class Stages:
    def __init__(self, stages: tuple[tuple[str, ...], ...], bake: float, hold: bool = False) -> None:
        self.named = stages
        self.bake = bake
        self.hold = hold  # release nothing past the first stage
        self._index = {region: index for index, regions in enumerate(stages) for region in regions}

    @classmethod
    def of(cls, config: Any) -> Stages | None:
        """The stages of a config with `rollout:`, else None (every region at once)."""
        rollout = getattr(config, "rollout", None)
        return None if rollout is None else cls(rollout.stages, rollout.bake, rollout.hold)

    @property
    def count(self) -> int:
        """Named stages; the stage of the regions not named has this index."""
        return len(self.named)

    def stage_of(self, region: str) -> int:
        return self._index.get(region, len(self.named))

    def regions(self, stage: int) -> list[str]:
        """The regions of a named stage; ["*"] for the one of every region not named."""
        return list(self.named[stage]) if stage < len(self.named) else ["*"]


class Rollout(NamedTuple):
    """A staged rollout under way: of the config `version`, stages 0 to `released` are served it."""

    stages: Stages
    version: str
    released: int
