"""Does a route's `compression: off` change anything? On a listener without `compression` Envoy compresses
nothing, so it does not; the config is still served. It is a warning, not a refusal: a team may mark a
route whose answers mix a secret with what a caller sent before the platform turns compression on, and
refusing it would make them take that protection out again. `pavilion validate` and `pavilion plan` say
so at the route's FILE:LINE:COL, in case the route sits on another listener than the one meant."""

from __future__ import annotations

from controlplane.config.model import Config

__all__ = ["compression_warnings"]


def compression_warnings(config: Config) -> list[str]:
    compressing = {item.name for item in config.listeners if item.compression is not None}
    return [f"{route.source}: warning: route {route.name} says `compression: off`, but listener {route.listener} "
            "does not compress (it has no `compression`): nothing changes until it does"
            for route in config.routes if not route.compression and route.listener not in compressing]
