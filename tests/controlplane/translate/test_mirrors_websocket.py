"""Route `mirrors` and `websocket` → Envoy: request mirror policies with a FractionalPercent, the mirror
services' clusters in every node's CDS, and the websocket upgrade enabled on its route only, listed
disabled in the connection manager of that listener alone."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2

from controlplane.config.model import Backend, Config, Endpoint, Listener, Match, Mirror, Route, Service
from tests.controlplane.translate.sample import translated

FRACTION = percent_pb2.FractionalPercent
ACCOUNTS = Route("accounts", "public", Match(prefix="/v1/accounts"), (Backend("accounts", 100),),
                 mirrors=(Mirror("accounts-next"), Mirror("audit", 5_000), Mirror("sample", 120_000),
                          Mirror("never", 0)))
CHAT = Route("chat", "public", Match(prefix="/chat"), (Backend("accounts", 100),), websocket=True, timeout=5.0)
PLAIN = Route("plain", "public", Match(prefix="/"), (Backend("accounts", 100),))
OTHER = Route("other", "internal", Match(prefix="/"), (Backend("accounts", 100),))


def config(*routes: Route) -> Config:
    services = tuple(Service(name, (Endpoint("127.0.0.1", 9000 + index, region),))
                     for index, (name, region) in enumerate([
                         ("accounts", "eu-west"), ("accounts-next", "eu-west"), ("audit", "us-east"),
                         ("sample", "us-east"), ("never", "eu-west")]))
    listeners = (Listener("public", "127.0.0.1", 10080), Listener("internal", "127.0.0.1", 10081))
    return Config(("eu-west", "us-east"), listeners, services, routes)


def routes_of(cfg: Config, listener: str = "public") -> dict[str, rc.Route]:
    (table,) = [t for t in translated(route_pb2.RouteConfiguration, cfg, "eu-west") if t.name == listener]
    return {r.name: r for host in table.virtual_hosts for r in host.routes}


def manager(cfg: Config, listener: str) -> hcm_pb2.HttpConnectionManager:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == listener]
    result = hcm_pb2.HttpConnectionManager()
    assert item.filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def test_mirrors_become_request_mirror_policies_in_order() -> None:
    policies = routes_of(config(ACCOUNTS, PLAIN))["accounts"].route.request_mirror_policies
    assert [p.cluster for p in policies] == ["accounts-next", "audit", "sample", "never"]
    shares = [(p.runtime_fraction.default_value.numerator, p.runtime_fraction.default_value.denominator)
              for p in policies]
    # Whole percents over HUNDRED, the others per MILLION (0.5 % is 5000 of a million).
    assert shares == [(100, FRACTION.HUNDRED), (5_000, FRACTION.MILLION), (12, FRACTION.HUNDRED),
                      (0, FRACTION.HUNDRED)]
    # The share is the YAML's alone: no runtime key could change it behind the config's back.
    assert all(p.runtime_fraction.runtime_key == "" for p in policies)
    # Envoy's default: the mirror sees `<host>-shadow`, so it can tell copies from real traffic.
    assert not any(p.disable_shadow_host_suffix_append for p in policies)
    assert not routes_of(config(ACCOUNTS, PLAIN))["plain"].route.request_mirror_policies


def test_every_mirror_service_is_a_cluster_of_every_region() -> None:
    for region in ("eu-west", "us-east"):
        names = {c.name for c in translated(cluster_pb2.Cluster, config(ACCOUNTS), region)}
        assert {"accounts-next", "audit", "sample", "never"} <= names


def test_websocket_is_enabled_on_its_route_only() -> None:
    routes = routes_of(config(CHAT, PLAIN, OTHER))
    (upgrade,) = routes["chat"].route.upgrade_configs
    assert (upgrade.upgrade_type, upgrade.HasField("enabled"), upgrade.enabled.value) == ("websocket", True, True)
    # The route timeout stays what the YAML says: Envoy 1.40 applies it to the upgrade until the 101 only.
    assert routes["chat"].route.timeout.seconds == 5
    assert not routes["plain"].route.upgrade_configs


def test_the_listener_with_a_websocket_route_lists_the_upgrade_disabled() -> None:
    cfg = config(CHAT, PLAIN, OTHER)
    (upgrade,) = manager(cfg, "public").upgrade_configs
    assert (upgrade.upgrade_type, upgrade.HasField("enabled"), upgrade.enabled.value) == ("websocket", True, False)
    assert not upgrade.filters  # upgraded streams run the listener's own filters (ext_authz, rate limits)
    # A listener without a websocket route lists no upgrade at all: Envoy refuses every one.
    assert not manager(cfg, "internal").upgrade_configs
    assert not manager(config(PLAIN, OTHER), "public").upgrade_configs
