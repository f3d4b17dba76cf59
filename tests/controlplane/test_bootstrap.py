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


def xds_cluster(doc: dict) -> dict:  # type: ignore[type-arg]
    return doc["static_resources"]["clusters"][0]  # type: ignore[no-any-return]


def test_without_xds_ca_the_xds_cluster_has_no_transport_socket_and_the_text_is_clean() -> None:
    from controlplane.bootstrap import render_bootstrap

    text = render_bootstrap(node_id="edge-1", region="eu-west", xds_address="127.0.0.1:18000")
    assert "transport_socket" not in text and "$" not in text
    assert "\n      connect_timeout: 1s\n      typed_extension_protocol_options:\n" in text


def test_xds_ca_gives_the_xds_cluster_upstream_tls_verifying_the_address() -> None:
    from controlplane.bootstrap import XdsTls

    doc = parsed(xds_tls=XdsTls("/etc/pavilion/xds-ca.pem"))
    socket = xds_cluster(doc)["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    config = socket["typed_config"]
    assert config["@type"] == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    assert "sni" not in config  # an IP address is never SNI
    context = config["common_tls_context"]
    assert context["validation_context"]["trusted_ca"] == {"filename": "/etc/pavilion/xds-ca.pem"}
    assert context["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}]
    assert "tls_certificates" not in context
    # the rest of the cluster is untouched
    assert xds_cluster(doc)["typed_extension_protocol_options"] == xds_cluster(parsed())[
        "typed_extension_protocol_options"]


def test_sni_defaults_to_the_dns_host_and_client_files_are_named_not_copied(tmp_path: Path) -> None:
    from controlplane.bootstrap import XdsTls

    key = tmp_path / "edge-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n-----END PRIVATE KEY-----\n")
    tls = XdsTls("ca.pem", client_cert=str(tmp_path / "edge.pem"), client_key=str(key))
    text = render_bootstrap(node_id="e", region="r", xds_address="controlplane.pavilion.svc:18000", xds_tls=tls)
    assert "SECRETBYTES" not in text
    config = xds_cluster(YAML(typ="safe").load(text))["transport_socket"]["typed_config"]
    assert config["sni"] == "controlplane.pavilion.svc"
    context = config["common_tls_context"]
    assert context["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "controlplane.pavilion.svc"}}]
    assert context["tls_certificates"] == [{"certificate_chain": {"filename": str(tmp_path / "edge.pem")},
                                            "private_key": {"filename": str(key)}}]
    named = parsed(xds_address="10.0.0.5:18000", xds_tls=XdsTls("ca.pem", server_name="xds.example"))
    config = xds_cluster(named)["transport_socket"]["typed_config"]
    assert config["sni"] == "xds.example"
    assert config["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == {
        "exact": "xds.example"}


@pytest.mark.parametrize(("flags", "message"), [
    (["--xds-client-cert", "c.pem", "--xds-client-key", "k.pem"], "need --xds-ca"),
    (["--xds-server-name", "x"], "--xds-server-name need --xds-ca"),
    (["--xds-ca", "ca.pem", "--xds-client-cert", "c.pem"], "give both or neither"),
    (["--xds-ca", "ca.pem", "--xds-client-key", "k.pem"], "give both or neither"),
])
def test_incomplete_xds_tls_flags_exit_2_naming_them(flags: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pavilion.cli import main

    assert main(["envoy-bootstrap", "--node-id", "e1", "--region", "eu-west", "--xds-address", "127.0.0.1:1",
                 *flags]) == 2
    out = capsys.readouterr()
    assert out.out == "" and message in out.err


def test_envoy_validates_a_bootstrap_with_mtls_to_the_control_plane(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    from controlplane.envoy_check import EnvoyNotFound, find_envoy
    from pavilion.cli import main
    from tests.controlplane.certs import make_ca, write_pair

    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    cert, key = write_pair(tmp_path, *ca.issue("edge-1", server=False))
    for address, extra in (("127.0.0.1:18000", []), ("localhost:18000", ["--xds-server-name", "xds.internal"])):
        assert main(["envoy-bootstrap", "--node-id", "e1", "--region", "eu-west", "--xds-address", address,
                     "--xds-ca", str(tmp_path / "ca.pem"), "--xds-client-cert", str(cert),
                     "--xds-client-key", str(key), *extra]) == 0
        path = tmp_path / "bootstrap.yaml"
        path.write_text(capsys.readouterr().out)
        done = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
