"""`compression` → Envoy's compressor filters: one per algorithm in preference order, just before the router
(after CORS, local limits, ext_authz and ratelimit), the first with choose_first, the library of each,
min_bytes and content types on the response direction only, 206 never compressed; a route's
`compression: off` disables every compressor of its listener (its CORS preflight companion too), and a
listener without `compression` gets nothing at all."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.compression.brotli.compressor.v3 import brotli_pb2
from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2
from envoy.extensions.compression.zstd.compressor.v3 import zstd_pb2
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import (
    Backend,
    Compression,
    Config,
    Cors,
    Endpoint,
    ExtAuthzSettings,
    Listener,
    LocalRateLimit,
    Match,
    RateLimitSettings,
    Route,
    Service,
)
from controlplane.translate._compression import compressor_filter_name
from tests.controlplane.translate.sample import translated

ALL_THREE = Compression(algorithms=("zstd", "br", "gzip"), min_bytes=512, content_types=("application/json",))
ACCOUNTS = Route("accounts", "public", Match(prefix="/v1/accounts", methods=("GET",)), (Backend("accounts"),),
                 cors=Cors(exact_origins=("https://app.example.com",)))
DOWNLOADS = Route("downloads", "public", Match(prefix="/downloads"), (Backend("accounts"),), compression=False)


def config(*routes: Route, compression: Compression | None = ALL_THREE, policy: bool = True) -> Config:
    endpoint = (Endpoint("127.0.0.1", 9001, "eu-west"),)
    listeners = (Listener("public", "127.0.0.1", 10080, compression=compression,
                          local_rate_limit=LocalRateLimit(requests=10, unit="second", burst=10)),
                 Listener("internal", "127.0.0.1", 10081))
    return Config(("eu-west",), listeners,
                  (Service("accounts", endpoint), Service("extauthz", endpoint, protocol="grpc")), routes,
                  extauthz=ExtAuthzSettings("extauthz") if policy else None,
                  ratelimit=RateLimitSettings("extauthz") if policy else None)


def manager(cfg: Config, name: str = "public") -> hcm_pb2.HttpConnectionManager:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == name]
    result = hcm_pb2.HttpConnectionManager()
    assert item.filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def compressors(cfg: Config) -> list[compressor_pb2.Compressor]:
    found = []
    for f in manager(cfg).http_filters:
        if f.name.startswith("pavilion.compressor."):
            message = compressor_pb2.Compressor()
            assert f.typed_config.Unpack(message)
            found.append(message)
    return found


def routes_of(cfg: Config, table: str = "public") -> dict[str, rc.Route]:
    (found,) = [t for t in translated(route_pb2.RouteConfiguration, cfg, "eu-west") if t.name == table]
    return {r.name: r for host in found.virtual_hosts for r in host.routes}


def test_compressors_sit_last_before_the_router_in_preference_order() -> None:
    names = [f.name for f in manager(config(ACCOUNTS)).http_filters]
    assert names == [
        "envoy.filters.http.cors", "pavilion.listener_local_ratelimit", "envoy.filters.http.ext_authz",
        "envoy.filters.http.ratelimit",
        "pavilion.compressor.zstd", "pavilion.compressor.br", "pavilion.compressor.gzip",
        "envoy.filters.http.router"]
    alone = [f.name for f in manager(config(ACCOUNTS, compression=Compression(), policy=False)).http_filters]
    assert alone[-3:] == ["pavilion.compressor.br", "pavilion.compressor.gzip", "envoy.filters.http.router"]


def test_each_filter_has_its_library_and_the_first_chooses_first() -> None:
    found = compressors(config(ACCOUNTS))
    libraries = [(c.compressor_library.name, c.compressor_library.typed_config.type_url.rsplit(".", 1)[1])
                 for c in found]
    assert libraries == [("zstd", "Zstd"), ("br", "Brotli"), ("gzip", "Gzip")]
    assert found[0].compressor_library.typed_config.Unpack(zstd_pb2.Zstd())
    assert found[1].compressor_library.typed_config.Unpack(brotli_pb2.Brotli())
    assert found[2].compressor_library.typed_config.Unpack(gzip_pb2.Gzip())
    assert [c.choose_first for c in found] == [True, False, False]
    # One algorithm has no tie to win.
    (single,) = compressors(config(ACCOUNTS, compression=Compression(algorithms=("gzip",))))
    assert not single.choose_first


def test_responses_only_with_min_bytes_content_types_and_never_a_206() -> None:
    for c in compressors(config(ACCOUNTS)):
        common = c.response_direction_config.common_config
        assert common.min_content_length.value == 512
        assert list(common.content_type) == ["application/json"]
        # Absent `enabled` is on; the deprecated top-level fields stay unset.
        assert not common.HasField("enabled") and not c.HasField("content_length") and not c.content_type
        assert list(c.response_direction_config.uncompressible_response_codes) == [206]
        assert not c.HasField("request_direction_config")
        assert not c.response_direction_config.remove_accept_encoding_header
        assert not c.response_direction_config.disable_on_etag_header
    defaults = compressors(config(ACCOUNTS, compression=Compression()))
    assert defaults[0].response_direction_config.common_config.min_content_length.value == 1024
    assert "application/json" in defaults[0].response_direction_config.common_config.content_type


def test_compression_off_disables_every_compressor_of_the_route() -> None:
    routes = routes_of(config(ACCOUNTS, replace(DOWNLOADS, cors=ACCOUNTS.cors, match=Match(
        prefix="/downloads", methods=("GET",)))))
    for name in ("downloads", "downloads/preflight"):
        configs = routes[name].typed_per_filter_config
        keys = sorted(k for k in configs if k.startswith("pavilion.compressor."))
        assert keys == sorted(compressor_filter_name(a) for a in ("zstd", "br", "gzip")), name
        for key in keys:
            per_route = compressor_pb2.CompressorPerRoute()
            assert configs[key].Unpack(per_route)
            assert per_route.disabled
    assert not any(k.startswith("pavilion.compressor.") for k in routes["accounts"].typed_per_filter_config)


def test_a_listener_without_compression_gets_no_filter_and_no_route_config() -> None:
    cfg = config(ACCOUNTS, DOWNLOADS, compression=None)
    assert not any(f.name.startswith("pavilion.compressor.") for f in manager(cfg).http_filters)
    assert not any(k.startswith("pavilion.compressor.") for r in routes_of(cfg).values()
                   for k in r.typed_per_filter_config)
    # The other listener of a compressing config is untouched too.
    internal = manager(config(ACCOUNTS), "internal").http_filters
    assert not any(f.name.startswith("pavilion.compressor.") for f in internal)
