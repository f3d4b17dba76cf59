"""The whole translation: a Config and a node's (region, role) to Envoy v3 resources by type URL."""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane import resources as urls
from controlplane.config.listener_tls import http3_twin
from controlplane.config.model import Config
from controlplane.translate._clusters import cluster, load_assignment
from controlplane.translate._http3 import serves_http3
from controlplane.translate._listeners import EDGE, envoy_listeners
from controlplane.translate._pavilion import PAVILION_ROLES, pavilion_resources
from controlplane.translate._routes import route_configuration
from controlplane.translate._tls import regional_certificates, secrets, upstream_secrets
from pavilion.errors import Location

__all__ = ["resource_sources", "route_sources", "translate", "translate_regional"]


def translate(config: Config, region: str, role: str = EDGE) -> dict[str, list[Message]]:
    """Every resource a node in `region` with `role` gets, keyed by type URL, each list sorted by name.

    Pure and deterministic: the same config gives byte-identical deterministic serializations, on
    any machine. Versions are not computed here; controlplane.snapshot hashes the result.
    A Pavilion service node (role extauthz or ratelimit) gets its own type and no Envoy resources.
    """
    if role in PAVILION_ROLES:
        nothing: dict[str, list[Message]] = {type_url: [] for type_url in urls.ADS_ORDER}
        return {**nothing, **pavilion_resources(config, role)}
    services = sorted(config.services, key=lambda s: s.name)
    listeners = sorted(config.listeners, key=lambda item: item.name)
    return {
        urls.CLUSTER: [cluster(s) for s in services],
        urls.ENDPOINT: [load_assignment(s, region) for s in services],
        urls.SECRET: _secrets(config, region),
        urls.LISTENER: sorted((found for item in listeners for found in envoy_listeners(item, config, role)),
                              key=lambda found: found.name),
        urls.ROUTE: [route_configuration(item, config) for item in listeners],
    }


def _secrets(config: Config, region: str) -> list[Message]:
    listeners = sorted(config.listeners, key=lambda item: item.name)
    services = sorted(config.services, key=lambda s: s.name)
    return sorted([*(s for item in listeners for s in secrets(item, region)),
                   *(s for service in services for s in upstream_secrets(service))], key=lambda s: s.name)


def translate_regional(config: Config, region: str, role: str = EDGE) -> dict[str, list[Message]]:
    """The part of `translate` that depends on the region: endpoints (locality priorities), and the
    secrets when a listener has certificates per region. The rest is the same for every region of a
    role, so the cache translates it once and shares it."""
    if role in PAVILION_ROLES:
        return {}
    found: dict[str, list[Message]] = {
        urls.ENDPOINT: [load_assignment(s, region) for s in sorted(config.services, key=lambda s: s.name)]}
    if regional_certificates(config):
        found[urls.SECRET] = _secrets(config, region)
    return found


def resource_sources(config: Config) -> dict[tuple[str, str], Location]:
    """(type URL, resource name) → the YAML entry that produced the resource.

    A RouteConfiguration is attributed to its listener; to find the route entry inside it, match
    the rejected `Route.name` (the YAML route name) through `route_sources`.
    """
    found: dict[tuple[str, str], Location] = {}
    for service in config.services:
        found[(urls.CLUSTER, service.name)] = service.source
        found[(urls.ENDPOINT, service.name)] = service.source
        for secret in upstream_secrets(service):
            found[(urls.SECRET, secret.name)] = service.source
    for item in config.listeners:
        found[(urls.LISTENER, item.name)] = item.source
        if serves_http3(item):
            found[(urls.LISTENER, http3_twin(item.name))] = item.source
        found[(urls.ROUTE, item.name)] = item.source
        for secret in secrets(item):
            found[(urls.SECRET, secret.name)] = item.source
    return found


def route_sources(config: Config) -> dict[str, Location]:
    """YAML route name (which is also the Envoy `Route.name`) → where that route entry is written."""
    return {r.name: r.source for r in config.routes}
