"""k8s: the manifests an operator applies hold together with the code they run.

Every Pavilion container's args parse with the real `pavilion` parser; every port a probe or a
Service names is a port of the container; the route YAML in the ConfigMaps loads, and names the
Services and ports the manifests define; the Envoy bootstrap is exactly what its recorded
`pavilion envoy-bootstrap` command prints, and Envoy itself validates it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from controlplane.bootstrap import render_bootstrap, split_address
from controlplane.config.load import load_config
from controlplane.envoy_check import EnvoyNotFound, find_envoy
from pavilion.cli import build_parser
from pavilion.settings import Settings
from tests.configmap import ConfigMapVolume

DIR = Path(__file__).resolve().parents[2] / "k8s"
NAMESPACE = "pavilion"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def load_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DIR.glob("*.yaml")):
        for doc in YAML(typ="safe").load_all(path.read_text()):
            if doc is not None:
                docs.append(doc | {"_file": path.name})
    return docs


DOCS = load_documents()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in DOCS if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} expected, found {len(found)}"
    return found[0]


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every workload."""
    for doc in DOCS:
        if doc["kind"] in WORKLOADS:
            spec = doc["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield doc, container


def pavilion_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w, c in containers() if c.get("command") == ["pavilion"]]


def parse(argv: list[str]) -> argparse.Namespace:
    """The real CLI parser; a bad flag fails the test with argparse's own message."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`pavilion {shlex.join(argv)}` does not parse (exit {exc.code})") from exc


def has_port(container: dict[str, Any], port: int | str) -> bool:
    ports = container.get("ports", [])
    return any(p.get("name") == port or p["containerPort"] == port for p in ports)


def service_dns(host: str) -> tuple[str, str]:
    """`NAME.NAMESPACE.svc.cluster.local` (or shorter forms) -> (NAME, NAMESPACE)."""
    parts = host.split(".")
    return parts[0], parts[1] if len(parts) > 1 else NAMESPACE


def service_port(service: dict[str, Any], port: int) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert found, f"Service {service['metadata']['name']} has no port {port}"
    return found[0]


def pods_of(service: dict[str, Any]) -> list[dict[str, Any]]:
    selector = service["spec"]["selector"]
    return [w for w in DOCS if w["kind"] in WORKLOADS
            and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]


def test_every_document_is_a_named_object_in_the_namespace() -> None:
    assert DOCS
    kinds = {doc["kind"] for doc in DOCS}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for doc in DOCS:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), doc["_file"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, (doc["_file"], doc["metadata"]["name"])
    for workload in of_kind("Deployment"):
        spec = workload["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_pavilion_args_parse_with_the_real_cli() -> None:
    commands = {}
    for workload, container in pavilion_containers():
        args = parse(container["args"])
        assert getattr(args, "func", None) is not None, container["args"]
        commands[args.command] = (workload, container, args)
    assert set(commands) == {"controlplane", "extauthz", "ratelimit"}


def test_pavilion_servers_listen_on_their_container_ports_on_every_address() -> None:
    for _workload, container in pavilion_containers():
        args = parse(container["args"])
        # loopback (the default) would be unreachable from other pods and from kubelet's probes
        assert args.host == "0.0.0.0", container["name"]
        for flag in ("port", "admin_port", "xds_port"):
            if getattr(args, flag, None) is not None:
                assert has_port(container, int(getattr(args, flag))), (container["name"], flag)
        if args.command in ("extauthz", "ratelimit"):  # their admin server binds metrics_host
            env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
            assert Settings.from_env(env).metrics_host == "0.0.0.0", container["name"]


def test_every_probe_names_a_port_of_its_container() -> None:
    probed = 0
    for _workload, container in containers():
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            action = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
            if action is None:
                continue
            assert has_port(container, action["port"]), (container["name"], kind, action)
            probed += 1
    assert probed >= 8
    for _workload, container in pavilion_containers():
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert (ready["path"], live["path"]) == ("/readyz", "/healthz"), container["name"]
        assert container["resources"]["requests"].keys() >= {"cpu", "memory"}


def test_every_service_port_reaches_a_container_port() -> None:
    for service in of_kind("Service"):
        pods = pods_of(service)
        assert pods, f"Service {service['metadata']['name']} selects no workload"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                spec = pod["spec"]["template"]["spec"]
                assert any(has_port(c, target) for c in spec["containers"]), (service["metadata"]["name"], target)


def test_the_controlplane_has_a_disruption_budget_below_its_replicas() -> None:
    plane = named("Deployment", "controlplane")
    labels = plane["spec"]["template"]["metadata"]["labels"]
    budgets = [b for b in of_kind("PodDisruptionBudget")
               if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(budgets) == 1
    assert 1 <= budgets[0]["spec"]["minAvailable"] < plane["spec"]["replicas"]


def test_services_reach_the_controlplane_and_redis_through_defined_services() -> None:
    plane = named("Service", "controlplane")
    plane_args = parse(next(c["args"] for _w, c in pavilion_containers() if c["args"][0] == "controlplane"))
    assert service_port(plane, plane_args.xds_port)
    for workload, container in pavilion_containers():
        args = parse(container["args"])
        if args.command == "controlplane":
            continue
        host, port = split_address(args.xds)
        assert service_dns(host) == ("controlplane", NAMESPACE), args.xds
        assert service_port(plane, port)["appProtocol"] == "grpc"
        redis = urlsplit(args.redis)
        name, namespace = service_dns(str(redis.hostname))
        assert namespace == NAMESPACE and service_port(named("Service", name), int(redis.port or 6379))
        if args.command == "ratelimit":  # on_backend_error: local divides each limit by this
            assert args.replicas == workload["spec"]["replicas"]


@pytest.fixture(scope="module")
def route_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The control plane's route directory as kubelet mounts it from the manifests' ConfigMaps."""
    plane = named("Deployment", "controlplane")
    container = plane["spec"]["template"]["spec"]["containers"][0]
    config = parse(container["args"]).config
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config)
    volume = next(v for v in plane["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    sources = [s["configMap"]["name"] for s in volume["projected"]["sources"]] if "projected" in volume \
        else [volume["configMap"]["name"]]
    files: dict[str, str] = {}
    for name in sources:
        data = named("ConfigMap", name)["data"]
        assert not files.keys() & data.keys(), f"ConfigMap {name} repeats a key of another source"
        files |= data
    root = tmp_path_factory.mktemp("k8s") / "routes"
    ConfigMapVolume(root, files)
    return root


def test_the_route_configmaps_load_and_name_the_manifests_services(route_dir: Path) -> None:
    config = load_config(route_dir)
    assert config.tenants and config.extauthz is not None and config.ratelimit is not None
    assert any(route.rate_limits for route in config.routes)
    by_ip = {s["spec"]["clusterIP"]: s for s in of_kind("Service") if "clusterIP" in s["spec"]}
    for service in config.services:
        for endpoint in service.endpoints:
            # endpoints are IPs (EDS does not resolve names): each must be a Service's fixed cluster IP
            assert endpoint.host in by_ip, f"{service.name}: {endpoint.host} is no Service's clusterIP"
            assert service_port(by_ip[endpoint.host], endpoint.port)
    for name in (config.extauthz.service, config.ratelimit.service):
        target = by_ip[config.service(name).endpoints[0].host]
        grpc = next(c for _w, c in pavilion_containers() if parse(c["args"]).command == name)
        assert pods_of(target)[0]["spec"]["template"]["spec"]["containers"][0] is grpc
        assert int(parse(grpc["args"]).port) == config.service(name).endpoints[0].port
    envoy = next(c for _w, c in containers() if c.get("command") == ["envoy"])
    for listener in config.listeners:
        assert listener.address == "0.0.0.0" and has_port(envoy, listener.port), listener


def bootstraps() -> list[dict[str, Any]]:
    return [doc for doc in of_kind("ConfigMap")
            if "pavilion.dev/generated-by" in doc["metadata"].get("annotations", {})]


def test_the_envoy_bootstrap_is_what_its_command_prints(route_dir: Path) -> None:
    assert bootstraps()
    regions = load_config(route_dir).regions
    for configmap in bootstraps():
        argv = shlex.split(configmap["metadata"]["annotations"]["pavilion.dev/generated-by"])
        assert argv[0] == "pavilion"
        args = parse(argv[1:])
        assert args.command == "envoy-bootstrap"
        expected = render_bootstrap(node_id=args.node_id, region=args.region, role=args.role,
                                    xds_address=args.xds_address, admin_port=args.admin_port, delta=args.delta)
        assert configmap["data"]["envoy.yaml"] == expected, "regenerate with the annotation's command"
        assert args.region in regions
        host, port = split_address(args.xds_address)
        assert service_dns(host) == ("controlplane", NAMESPACE)
        assert service_port(named("Service", "controlplane"), port)["name"] == "xds"
        # an Envoy Deployment mounts it where its -c points
        users = [(w, c) for w, c in containers() if c.get("command") == ["envoy"]
                 and any(v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
                         for v in w["spec"]["template"]["spec"]["volumes"])]
        assert len(users) == 1
        workload, container = users[0]
        path = Path(container["args"][container["args"].index("-c") + 1])
        volume = next(v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]
                      if v.get("configMap", {}).get("name") == configmap["metadata"]["name"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume)
        assert Path(mount["mountPath"]) / "envoy.yaml" == path


def test_envoy_validates_the_bootstrap(tmp_path: Path) -> None:
    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    for configmap in bootstraps():
        path = tmp_path / f"{configmap['metadata']['name']}.yaml"
        path.write_text(configmap["data"]["envoy.yaml"])
        done = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                               "-l", "error"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
