from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from controlplane.bootstrap import render_bootstrap, split_address


def parsed(**kwargs: object) -> dict:  # type: ignore[type-arg]
    args = {"node_id": "edge-1", "region": "eu-west", "xds_address": "127.0.0.1:18000", **kwargs}
    return YAML(typ="safe").load(render_bootstrap(**args))  # type: ignore[arg-type, no-any-return]


def test_bootstrap_names_the_node_and_points_ads_at_the_control_plane() -> None:
    doc = parsed(admin_port=9911, role="edge")
    assert doc["node"]["id"] == "edge-1"
    assert doc["node"]["locality"]["region"] == "eu-west"
    assert doc["node"]["metadata"] == {"region": "eu-west", "role": "edge"}
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC" and ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    assert doc["dynamic_resources"]["lds_config"]["ads"] == {}
    assert doc["dynamic_resources"]["cds_config"]["ads"] == {}
    xds = doc["static_resources"]["clusters"][0]
    assert xds["type"] == "STATIC"
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": 18000}
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9911}


def test_hostnames_resolve_by_dns_and_odd_values_stay_strings() -> None:
    doc = parsed(xds_address="xds.internal:18000", node_id='a: "b"\nc', region="yes")
    assert doc["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    assert doc["node"]["id"] == 'a: "b"\nc'
    assert doc["node"]["locality"]["region"] == "yes"  # not YAML 1.1's boolean


def test_bad_addresses_are_refused() -> None:
    assert split_address("[::1]:18000") == ("::1", 18000)
    for bad in ("127.0.0.1", ":18000", "host:0", "host:99999", "host:port"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            split_address(bad)


def test_delta_flag_asks_envoy_for_delta_xds(capsys: pytest.CaptureFixture[str]) -> None:
    from pavilion.cli import main

    assert main(["envoy-bootstrap", "--node-id", "e1", "--region", "eu-west", "--xds-address", "127.0.0.1:1",
                 "--delta"]) == 0
    doc = YAML(typ="safe").load(capsys.readouterr().out)
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_template_found_in_the_installed_data_files_when_the_source_tree_is_absent(tmp_path: Path) -> None:
    from controlplane.bootstrap import TEMPLATE_DIRS, template_path

    installed = tmp_path / "share" / "pavilion" / "envoy"
    installed.mkdir(parents=True)
    (installed / "edge.yaml").write_text((TEMPLATE_DIRS[0] / "edge.yaml").read_text())
    assert template_path("edge.yaml", (tmp_path / "missing", installed)) == installed / "edge.yaml"
    with pytest.raises(FileNotFoundError, match="missing"):
        template_path("edge.yaml", (tmp_path / "missing",))
