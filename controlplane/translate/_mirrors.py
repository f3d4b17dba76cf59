"""A route's `mirrors` → RouteAction.request_mirror_policies: Envoy copies the request to each service
(the Host/authority with `-shadow` appended), after every HTTP filter has run, and drops the answer."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.v3 import percent_pb2

from controlplane.config.model import Mirror

__all__ = ["mirror_policy"]

_PER_HUNDRED = 10_000  # parts per million in one percent


def mirror_policy(mirror: Mirror) -> rc.RouteAction.RequestMirrorPolicy:
    """No runtime key: the share is the YAML's, and only the YAML changes it."""
    fraction = percent_pb2.FractionalPercent
    if mirror.per_million % _PER_HUNDRED == 0:  # a whole percent reads as one
        share = fraction(numerator=mirror.per_million // _PER_HUNDRED, denominator=fraction.HUNDRED)
    else:
        share = fraction(numerator=mirror.per_million, denominator=fraction.MILLION)
    return rc.RouteAction.RequestMirrorPolicy(
        cluster=mirror.service, runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=share))
