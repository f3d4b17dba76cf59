"""A listener's `compression` → Envoy's compressor filters, one per algorithm; a route's `compression: off`
→ CompressorPerRoute{disabled} for each of them.

How several compressor filters agree (Envoy 1.40, checked against the real Envoy in
tests/integration/test_compression_envoy.py): each filter registers with the stream; the first to see
the response picks one encoding for all of them, the one the client gives the highest q-value among
those whose filter takes the response's content type. A tie goes to the client's own order, except
that a filter with `choose_first` wins the ties it is in. So the first algorithm gets `choose_first`:
the server's preference wins over a client's listing order (`Accept-Encoding: gzip, br` gets br with
`[br, gzip]`), and a higher q-value still wins over it. Between the second and third of three, the
client's order decides: `choose_first` on two filters does not rank them (the last one the client
names would win). `Accept-Encoding: *` gets the first filter in the chain, the first algorithm.

Where the filters sit (`_listeners.http_filters`): after CORS, the local rate limits, RBAC, ext_authz
and ratelimit, just before the router. On the response path they are then the first filters after
the router: every response the router hands back (the service's, a route's `direct_response`) can be
compressed, while the short refusals of the filters before them (a preflight's answer, a 403, a 401
from ext_authz, a 429 of a rate limit) skip them. Those are a few dozen bytes, under any sensible
`min_bytes`, and a refused request then costs no compressor work at all.

A response is left as it is when it is smaller than `min_bytes` (by its Content-Length; a streamed
response without one is compressed whatever its size), of a content type not listed, already
encoded by the service (it has a Content-Encoding), marked `Cache-Control: no-transform`, a 206
(its Content-Range counts the uncompressed bytes), or when the client accepts none of the algorithms.
Envoy adds `Vary: Accept-Encoding` to every response it could have compressed, compressed or not, so
a cache in front keeps one copy per encoding; it weakens a strong ETag of a compressed response.
Library settings are Envoy's defaults (gzip level 6 with a 4 KiB window, Brotli quality 3, zstd level
3): fast enough for dynamic answers, where a higher level costs more CPU than it saves on the wire.
"""

from __future__ import annotations

from envoy.config.core.v3 import extension_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.compression.brotli.compressor.v3 import brotli_pb2
from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2
from envoy.extensions.compression.zstd.compressor.v3 import zstd_pb2
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Compression, Listener
from controlplane.translate._protos import packed, uint32

__all__ = ["COMPRESSOR_FILTER_PREFIX", "compressor_filter_name", "compressor_filters", "disable_compression"]

COMPRESSOR_FILTER_PREFIX = "pavilion.compressor."
# HTTP status codes never compressed: a 206's Content-Range counts bytes of the uncompressed body.
_UNCOMPRESSIBLE = (206,)

_Compressor = compressor_pb2.Compressor


def compressor_filter_name(algorithm: str) -> str:
    """The HttpFilter name of `algorithm`'s compressor; routes key their per-route config on it."""
    return COMPRESSOR_FILTER_PREFIX + algorithm


def compressor_filters(item: Listener) -> list[hcm_pb2.HttpFilter]:
    """One compressor filter per algorithm of the listener's `compression`, the preferred first; none without."""
    if item.compression is None:
        return []
    return [hcm_pb2.HttpFilter(name=compressor_filter_name(algorithm),
                               typed_config=packed(_compressor(item.compression, algorithm, first=index == 0)))
            for index, algorithm in enumerate(item.compression.algorithms)]


def disable_compression(message: rc.Route, item: Listener) -> None:
    """Turn every compressor of `item` off for the translated route `message` (`compression: off`)."""
    if item.compression is None:
        return
    off = packed(compressor_pb2.CompressorPerRoute(disabled=True))
    for algorithm in item.compression.algorithms:
        message.typed_per_filter_config[compressor_filter_name(algorithm)].CopyFrom(off)


def _compressor(compression: Compression, algorithm: str, *, first: bool) -> compressor_pb2.Compressor:
    common = _Compressor.CommonDirectionConfig(
        min_content_length=uint32(compression.min_bytes),
        content_type=list(compression.content_types),
    )
    return _Compressor(
        compressor_library=extension_pb2.TypedExtensionConfig(name=algorithm, typed_config=packed(_library(algorithm))),
        # No request_direction_config: request bodies are never compressed (or decompressed).
        response_direction_config=_Compressor.ResponseDirectionConfig(
            common_config=common, uncompressible_response_codes=list(_UNCOMPRESSIBLE)),
        # Wins the ties it is in: the server's first preference over the client's listing order.
        choose_first=first and len(compression.algorithms) > 1,
    )


def _library(algorithm: str) -> gzip_pb2.Gzip | brotli_pb2.Brotli | zstd_pb2.Zstd:
    if algorithm == "gzip":
        return gzip_pb2.Gzip()
    if algorithm == "br":
        return brotli_pb2.Brotli()
    if algorithm == "zstd":
        return zstd_pb2.Zstd()
    raise ValueError(f"no compressor library for {algorithm!r}")

