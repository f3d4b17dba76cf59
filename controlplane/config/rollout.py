"""The top-level `rollout:`: each new config reaches the regions stage by stage, not all at once.

    rollout:
      stages: [eu-west, [us-east, us-west]]   # a region, or regions released together
      bake: 5m                                # after a stage's proxies all acked, before the next

A region no stage names is released last, with the nodes of no region. The control plane carries it
out (controlplane/rollout.py); here it is only read and checked.
"""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.build import Builder
from controlplane.config.policy import distinct
from controlplane.config.sections import given_once
from controlplane.config.shape import Fields, Got
from pavilion.errors import ConfigError

__all__ = ["read_rollout"]


def read_rollout(roots: list[Fields], builder: Builder, errors: list[ConfigError]) -> model.Rollout | None:
    """`rollout:` if one file gives it whole, with every region known and named once; else None."""
    f: Fields | None = given_once(roots, "rollout", errors)
    if f is None or not f.complete:
        return None
    stages: list[list[Got]] = [got.value if isinstance(got.value, list) else [got] for got in f.get("stages")]
    regions = [got for stage in stages for got in stage]
    known = [builder.known(got, builder.names.regions, "region", " (add it to `regions`)") for got in regions]
    if distinct(regions, "region", builder.problem) is None or not all(known):
        return None
    return model.Rollout(tuple(tuple(got.value for got in stage) for stage in stages), f.get("bake"),
                         f.get("hold", False))
