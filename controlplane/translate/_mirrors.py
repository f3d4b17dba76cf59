"""A route's `mirrors` → RouteAction.request_mirror_policies: Envoy copies the request to each service
(the Host/authority with `-shadow` appended), after every HTTP filter has run, and drops the answer."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.v3 import percent_pb2

from controlplane.config.model import Mirror

__all__ = ["fractional_percent", "mirror_policy"]

_PER_HUNDRED = 10_000  # parts per million in one percent


def fractional_percent(per_million: int) -> percent_pb2.FractionalPercent:
    """A share as Envoy reads it: over HUNDRED when a whole percent (it reads as one), else over MILLION."""
    fraction = percent_pb2.FractionalPercent
    if per_million % _PER_HUNDRED == 0:
        return fraction(numerator=per_million // _PER_HUNDRED, denominator=fraction.HUNDRED)
    return fraction(numerator=per_million, denominator=fraction.MILLION)


def mirror_policy(mirror: Mirror) -> rc.RouteAction.RequestMirrorPolicy:
    """No runtime key: the share is the YAML's, and only the YAML changes it."""
    share = fractional_percent(mirror.per_million)
    return rc.RouteAction.RequestMirrorPolicy(
        cluster=mirror.service, runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=share))
