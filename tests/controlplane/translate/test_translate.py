from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

from envoy.config.route.v3 import route_pb2

from controlplane import resources as urls
from controlplane.config.model import Config
from controlplane.translate import resource_sources, route_sources, translate
from pavilion.errors import Location
from tests.controlplane.translate.sample import REGIONS, sample_config, translated


def wire(config: Config, region: str) -> dict[str, list[bytes]]:
    return {type_url: [m.SerializeToString(deterministic=True) for m in messages]
            for type_url, messages in translate(config, region).items()}


def names(resources: dict[str, list[object]]) -> dict[str, list[str]]:
    return {t: [getattr(m, "cluster_name" if t == urls.ENDPOINT else "name") for m in ms]
            for t, ms in resources.items()}


def test_keys_are_the_known_type_urls_and_lists_are_sorted_by_name() -> None:
    resources = translate(sample_config(), "eu-west")
    assert set(resources) == set(urls.ADS_ORDER)
    assert resources[urls.SECRET] == []
    for type_url, found in names(resources).items():  # type: ignore[arg-type]
        assert found == sorted(found), type_url
        assert len(found) == len(set(found)), type_url


def test_same_input_gives_the_same_bytes() -> None:
    assert wire(sample_config(), "eu-west") == wire(sample_config(), "eu-west")
    assert wire(sample_config(), "eu-west") != wire(sample_config(), "us-east")


def test_order_of_services_listeners_and_routes_in_yaml_does_not_matter() -> None:
    config = sample_config()
    expected = wire(config, "eu-west")
    shuffler = random.Random(7)
    for _ in range(5):
        services, listeners, routes = list(config.services), list(config.listeners), list(config.routes)
        for items in (services, listeners, routes):
            shuffler.shuffle(items)
        shuffled = replace(config, services=tuple(services), listeners=tuple(listeners), routes=tuple(routes))
        assert wire(shuffled, "eu-west") == expected


def test_moving_an_entry_to_another_file_changes_nothing() -> None:
    config = sample_config()
    moved = replace(config, routes=tuple(replace(r, source=Location("elsewhere.yaml", 99)) for r in config.routes))
    assert wire(moved, "eu-west") == wire(config, "eu-west")


_OTHER_PROCESS = """
import sys
from tests.controlplane.translate.sample import sample_config
from controlplane.translate import translate
for messages in translate(sample_config(), sys.argv[1]).values():
    for m in messages:
        sys.stdout.write(m.SerializeToString(deterministic=True).hex() + "\\n")
"""


def test_another_process_with_another_hash_seed_gives_the_same_bytes() -> None:
    # Replicas must agree byte for byte; set and dict iteration must not leak into the output.
    outputs = set()
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", _OTHER_PROCESS, REGIONS[0]], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."}, timeout=60)
        outputs.add(done.stdout)
    here = "".join(b.hex() + "\n" for blobs in wire(sample_config(), REGIONS[0]).values() for b in blobs)
    assert outputs == {here}


def test_resource_sources_point_at_the_yaml_entries() -> None:
    sources = resource_sources(sample_config())
    assert sources[(urls.CLUSTER, "accounts")] == Location("teams/accounts.yaml", 8, 5)
    assert sources[(urls.ENDPOINT, "billing-v2")] == Location("teams/billing.yaml", 9, 5)
    assert sources[(urls.LISTENER, "public")] == Location("gateway.yaml", 2, 5)
    assert sources[(urls.ROUTE, "internal")] == Location("gateway.yaml", 3, 5)
    resources = translate(sample_config(), "eu-west")
    produced = {(t, n) for t, ns in names(resources).items() for n in ns}  # type: ignore[arg-type]
    assert produced == set(sources)


def test_route_sources_name_every_envoy_route() -> None:
    sources = route_sources(sample_config())
    assert sources["invoice"] == Location("teams/billing.yaml", 22, 5)
    envoy_routes = {r.name for rc in translated(route_pb2.RouteConfiguration, sample_config(), "eu-west")
                    for v in rc.virtual_hosts for r in v.routes}
    assert envoy_routes == set(sources)

