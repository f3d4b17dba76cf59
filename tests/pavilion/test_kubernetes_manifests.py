"""k8s: the manifests an operator applies hold together with the code they run.

Every Pavilion container's args parse with the real `pavilion` parser; every port a probe or a
Service names is a port of the container; the route YAML in the ConfigMaps loads, and names the
Services and ports the manifests define; the Envoy bootstrap is exactly what its recorded
`pavilion envoy-bootstrap` command prints, and Envoy itself validates it.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from controlplane.bootstrap import XdsTls, render_bootstrap, split_address
from controlplane.config.load import load_config
from controlplane.config.model import Config
from controlplane.envoy_check import EnvoyNotFound, find_envoy
from pavilion.cli import build_parser
from pavilion.settings import Settings
from tests.configmap import ConfigMapVolume
from tests.controlplane.certs import Ca, cert_pem, key_pem, make_ca

DIR = Path(__file__).resolve().parents[2] / "k8s"
TLS_DIR = DIR / "tls"
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


def of_kind(kind: str, docs: list[dict[str, Any]] = DOCS) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(kind: str, name: str, docs: list[dict[str, Any]] = DOCS) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind, docs) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} expected, found {len(found)}"
    return found[0]


def containers(docs: list[dict[str, Any]] = DOCS) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every workload."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            spec = doc["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield doc, container


def pavilion_containers(docs: list[dict[str, Any]] = DOCS) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w, c in containers(docs) if c.get("command") == ["pavilion"]]


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


def pods_of(service: dict[str, Any], docs: list[dict[str, Any]] = DOCS) -> list[dict[str, Any]]:
    selector = service["spec"]["selector"]
    return [w for w in docs if w["kind"] in WORKLOADS
            and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]


@functools.cache
def tls_documents() -> list[dict[str, Any]]:
    """The TLS variant (k8s/tls) as kustomize renders it, with the command its README gives."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is needed to render k8s/tls")
    done = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(TLS_DIR)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in YAML(typ="safe").load_all(done.stdout) if doc is not None]


@pytest.fixture(params=["base", "tls"])
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The base manifests (k8s/*.yaml), then the TLS variant: every check below holds for both."""
    return DOCS if request.param == "base" else tls_documents()


def test_every_document_is_a_named_object_in_the_namespace(docs: list[dict[str, Any]]) -> None:
    assert docs
    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), doc.get("_file")
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, (doc.get("_file"), doc["metadata"]["name"])
    for workload in of_kind("Deployment", docs):
        spec = workload["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_pavilion_args_parse_with_the_real_cli(docs: list[dict[str, Any]]) -> None:
    commands = {}
    for workload, container in pavilion_containers(docs):
        args = parse(container["args"])
        assert getattr(args, "func", None) is not None, container["args"]
        commands[args.command] = (workload, container, args)
    assert set(commands) == {"controlplane", "extauthz", "ratelimit"}


def test_pavilion_servers_listen_on_their_container_ports_on_every_address(docs: list[dict[str, Any]]) -> None:
    for _workload, container in pavilion_containers(docs):
        args = parse(container["args"])
        # loopback (the default) would be unreachable from other pods and from kubelet's probes
        assert args.host == "0.0.0.0", container["name"]
        for flag in ("port", "admin_port", "xds_port"):
            if getattr(args, flag, None) is not None:
                assert has_port(container, int(getattr(args, flag))), (container["name"], flag)
        if args.command in ("extauthz", "ratelimit"):  # their admin server binds metrics_host
            env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
            assert Settings.from_env(env).metrics_host == "0.0.0.0", container["name"]


def test_every_probe_names_a_port_of_its_container(docs: list[dict[str, Any]]) -> None:
    probed = 0
    for _workload, container in containers(docs):
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
    for _workload, container in pavilion_containers(docs):
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert (ready["path"], live["path"]) == ("/readyz", "/healthz"), container["name"]
        assert container["resources"]["requests"].keys() >= {"cpu", "memory"}


def test_every_service_port_reaches_a_container_port(docs: list[dict[str, Any]]) -> None:
    for service in of_kind("Service", docs):
        pods = pods_of(service, docs)
        assert pods, f"Service {service['metadata']['name']} selects no workload"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                spec = pod["spec"]["template"]["spec"]
                assert any(has_port(c, target) for c in spec["containers"]), (service["metadata"]["name"], target)


def test_the_controlplane_has_a_disruption_budget_below_its_replicas(docs: list[dict[str, Any]]) -> None:
    plane = named("Deployment", "controlplane", docs)
    labels = plane["spec"]["template"]["metadata"]["labels"]
    budgets = [b for b in of_kind("PodDisruptionBudget", docs)
               if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(budgets) == 1
    assert 1 <= budgets[0]["spec"]["minAvailable"] < plane["spec"]["replicas"]


def test_services_reach_the_controlplane_and_redis_through_defined_services(docs: list[dict[str, Any]]) -> None:
    plane = named("Service", "controlplane", docs)
    plane_args = parse(next(c["args"] for _w, c in pavilion_containers(docs) if c["args"][0] == "controlplane"))
    assert service_port(plane, plane_args.xds_port)
    for workload, container in pavilion_containers(docs):
        args = parse(container["args"])
        if args.command == "controlplane":
            continue
        host, port = split_address(args.xds)
        assert service_dns(host) == ("controlplane", NAMESPACE), args.xds
        assert service_port(plane, port)["appProtocol"] == "grpc"
        redis = urlsplit(args.redis)
        name, namespace = service_dns(str(redis.hostname))
        assert namespace == NAMESPACE and service_port(named("Service", name, docs), int(redis.port or 6379))
        if args.command == "ratelimit":  # on_backend_error: local divides each limit by this
            assert args.replicas == workload["spec"]["replicas"]


def mount_routes(docs: list[dict[str, Any]], root: Path) -> Path:
    """The control plane's route directory as kubelet mounts it from the manifests' ConfigMaps."""
    plane = named("Deployment", "controlplane", docs)
    container = plane["spec"]["template"]["spec"]["containers"][0]
    config = parse(container["args"]).config
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config)
    volume = next(v for v in plane["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    sources = [s["configMap"]["name"] for s in volume["projected"]["sources"]] if "projected" in volume \
        else [volume["configMap"]["name"]]
    files: dict[str, str] = {}
    for name in sources:
        data = named("ConfigMap", name, docs)["data"]
        assert not files.keys() & data.keys(), f"ConfigMap {name} repeats a key of another source"
        files |= data
    ConfigMapVolume(root, files)
    return root


@pytest.fixture(scope="module")
def route_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mount_routes(DOCS, tmp_path_factory.mktemp("k8s") / "routes")


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


def bootstraps(docs: list[dict[str, Any]] = DOCS) -> list[dict[str, Any]]:
    return [doc for doc in of_kind("ConfigMap", docs)
            if "pavilion.dev/generated-by" in doc["metadata"].get("annotations", {})]


def bootstrap_args(configmap: dict[str, Any]) -> argparse.Namespace:
    argv = shlex.split(configmap["metadata"]["annotations"]["pavilion.dev/generated-by"])
    assert argv[0] == "pavilion"
    args = parse(argv[1:])
    assert args.command == "envoy-bootstrap"
    return args


def envoy_using(configmap: dict[str, Any], docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one (workload, container) running Envoy on this bootstrap ConfigMap."""
    users = [(w, c) for w, c in containers(docs) if c.get("command") == ["envoy"]
             and any(v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
                     for v in w["spec"]["template"]["spec"]["volumes"])]
    assert len(users) == 1
    return users[0]


def test_the_envoy_bootstrap_is_what_its_command_prints(docs: list[dict[str, Any]], route_dir: Path) -> None:
    assert bootstraps(docs)
    regions = load_config(route_dir).regions  # the TLS variant changes only the listener (checked below)
    for configmap in bootstraps(docs):
        args = bootstrap_args(configmap)
        tls = XdsTls(args.xds_ca, args.xds_client_cert or "", args.xds_client_key or "",
                     args.xds_server_name or "") if args.xds_ca else None
        expected = render_bootstrap(node_id=args.node_id, region=args.region, role=args.role,
                                    xds_address=args.xds_address, admin_port=args.admin_port, delta=args.delta,
                                    xds_tls=tls)
        assert configmap["data"]["envoy.yaml"] == expected, "regenerate with the annotation's command"
        assert args.region in regions
        host, port = split_address(args.xds_address)
        assert service_dns(host) == ("controlplane", NAMESPACE)
        assert service_port(named("Service", "controlplane", docs), port)["name"] == "xds"
        # an Envoy Deployment mounts it where its -c points
        workload, container = envoy_using(configmap, docs)
        path = Path(container["args"][container["args"].index("-c") + 1])
        volume = next(v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]
                      if v.get("configMap", {}).get("name") == configmap["metadata"]["name"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume)
        assert Path(mount["mountPath"]) / "envoy.yaml" == path


def test_envoy_validates_the_bootstrap(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    for configmap in bootstraps(docs):
        text = configmap["data"]["envoy.yaml"]
        args = bootstrap_args(configmap)
        if args.xds_ca:  # Envoy reads the files named, here made in their folder's stead
            ca = make_ca()
            cert, key = ca.issue("envoy", server=False)
            files = tmp_path / "xds-client"
            files.mkdir()
            (files / "ca.crt").write_bytes(ca.pem)
            (files / "tls.crt").write_bytes(cert_pem(cert))
            (files / "tls.key").write_bytes(key_pem(key))
            for flag in (args.xds_ca, args.xds_client_cert, args.xds_client_key):
                text = text.replace(f'"{flag}"', json.dumps(str(files / Path(flag).name)))
        path = tmp_path / f"{configmap['metadata']['name']}.yaml"
        path.write_text(text)
        done = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                               "-l", "error"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


# The TLS variant (k8s/tls): cert-manager Certificates and Issuers, mounted as Secrets, named by flags.

CERT_MANAGER_FILES = ("tls.crt", "tls.key", "ca.crt")  # the keys cert-manager writes in a Certificate's Secret


def certificate_of_secret(docs: list[dict[str, Any]], secret: str) -> dict[str, Any]:
    found = [c for c in of_kind("Certificate", docs) if c["spec"]["secretName"] == secret]
    assert len(found) == 1, f"one Certificate with secretName {secret} expected, found {len(found)}"
    return found[0]


def mounted_file(docs: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any],
                 path: str) -> tuple[dict[str, Any], str]:
    """(the Certificate whose Secret provides `path` in `container`, the Secret key) or an assertion."""
    folder, name = str(Path(path).parent), Path(path).name
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == folder]
    assert mounts, f"{container['name']}: nothing is mounted at {folder} (for {path})"
    assert "subPath" not in mounts[0], f"{container['name']}: a subPath mount is never updated by kubelet"
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[0]["name"])
    assert "secret" in volume, f"{container['name']}: {folder} is not a Secret volume"
    assert name in CERT_MANAGER_FILES, f"{path}: cert-manager writes {', '.join(CERT_MANAGER_FILES)}, not {name}"
    assert not volume["secret"].get("items"), "every key of the Secret stays mounted under its own name"
    return certificate_of_secret(docs, volume["secret"]["secretName"]), name


def issuer_of(docs: list[dict[str, Any]], certificate: dict[str, Any]) -> dict[str, Any]:
    ref = certificate["spec"]["issuerRef"]
    assert ref.get("kind", "Issuer") == "Issuer" and ref.get("group", "cert-manager.io") == "cert-manager.io"
    return named("Issuer", ref["name"], docs)


def test_tls_certificates_come_from_the_issuers_defined_with_them() -> None:
    docs = tls_documents()
    certificates = of_kind("Certificate", docs)
    assert certificates and of_kind("Issuer", docs)
    secrets = [c["spec"]["secretName"] for c in certificates]
    assert len(secrets) == len(set(secrets)), "two Certificates write the same Secret"
    for certificate in certificates:
        issuer = issuer_of(docs, certificate)
        if "ca" in issuer["spec"]:  # a CA issuer signs with the Secret of a CA Certificate made here
            assert certificate_of_secret(docs, issuer["spec"]["ca"]["secretName"])["spec"].get("isCA") is True
        else:
            assert "selfSigned" in issuer["spec"], issuer["metadata"]["name"]
    mounted = {v["secret"]["secretName"] for w in of_kind("Deployment", docs)
               for v in w["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    ca_secrets = {i["spec"]["ca"]["secretName"] for i in of_kind("Issuer", docs) if "ca" in i["spec"]}
    assert mounted <= set(secrets), f"Secret volumes no Certificate writes: {sorted(mounted - set(secrets))}"
    assert set(secrets) - ca_secrets <= mounted, "a Certificate whose Secret no pod mounts"
    assert not mounted & ca_secrets, "the CA's private key is mounted into a pod"


def test_tls_xds_is_mutual_tls_with_files_the_secret_mounts_provide() -> None:
    docs = tls_documents()
    by_command = {parse(c["args"]).command: (w, c) for w, c in pavilion_containers(docs)}
    workload, container = by_command["controlplane"]
    plane = parse(container["args"])
    assert plane.xds_tls_cert and plane.xds_tls_key and plane.xds_client_ca, "the control plane must require mTLS"
    server, cert_key = mounted_file(docs, workload, container, plane.xds_tls_cert)
    assert (server, "tls.key") == mounted_file(docs, workload, container, plane.xds_tls_key)
    assert cert_key == "tls.crt" and "server auth" in server["spec"]["usages"]
    xds_issuer = issuer_of(docs, server)
    assert "ca" in xds_issuer["spec"], "the xDS certificates come from the internal CA issuer"
    trusted, name = mounted_file(docs, workload, container, plane.xds_client_ca)
    assert name == "ca.crt" and issuer_of(docs, trusted) is xds_issuer  # ca.crt of that issuer: the xDS CA

    # (who, workload, container, xDS address, CA file, certificate file, key file) of every xDS client
    clients = []
    for command in ("extauthz", "ratelimit"):
        workload, container = by_command[command]
        args = parse(container["args"])
        clients.append((command, workload, container, args.xds, args.xds_ca, args.xds_client_cert,
                        args.xds_client_key))
    for configmap in bootstraps(docs):
        args = bootstrap_args(configmap)
        workload, container = envoy_using(configmap, docs)
        clients.append((container["name"], workload, container, args.xds_address, args.xds_ca,
                        args.xds_client_cert, args.xds_client_key))
    assert len(clients) == 3
    identities = set()
    for who, workload, container, address, ca, cert, key in clients:
        assert ca and cert and key, f"{who}: the control plane requires a client certificate"
        assert split_address(address)[0] in server["spec"]["dnsNames"], f"{who} dials a name the server lacks"
        verifier, name = mounted_file(docs, workload, container, ca)
        assert name == "ca.crt" and issuer_of(docs, verifier) is xds_issuer, who
        client, name = mounted_file(docs, workload, container, cert)
        assert name == "tls.crt" and (client, "tls.key") == mounted_file(docs, workload, container, key), who
        assert issuer_of(docs, client) is xds_issuer and "client auth" in client["spec"]["usages"], who
        identities.add(client["metadata"]["name"])
    assert len(identities) == 3, "each client has its own certificate"


def tls_files(docs: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any],
              paths: list[str], root: Path) -> dict[str, Path]:
    """Made files in the stead of those cert-manager would write at `paths` (mounts of `container`): each
    Certificate's Secret gets a fresh leaf for its names and usage, signed by a CA made once per Issuer,
    and `ca.crt` that CA, as cert-manager writes it. Path in the pod -> made file."""
    cas: dict[str, Ca] = {}
    made: dict[str, Path] = {}
    for path in paths:
        certificate, name = mounted_file(docs, workload, container, path)
        issuer = issuer_of(docs, certificate)["metadata"]["name"]
        ca = cas.setdefault(issuer, make_ca(issuer))
        folder = root / certificate["spec"]["secretName"]
        if not folder.exists():
            folder.mkdir(parents=True)
            spec = certificate["spec"]
            cert, key = ca.issue(spec.get("commonName", "x"), server="server auth" in spec["usages"],
                                 dns_names=tuple(spec.get("dnsNames", ("localhost",))))
            (folder / "tls.crt").write_bytes(cert_pem(cert))
            (folder / "tls.key").write_bytes(key_pem(key))
            (folder / "ca.crt").write_bytes(ca.pem)
        made[path] = folder / name
    return made


def tls_route_yaml(docs: list[dict[str, Any]], root: Path) -> tuple[dict[str, Any], Config]:
    """The TLS variant's gateway.yaml as read, and the whole route YAML loaded as the control plane loads
    it, every file a listener's or service's `tls:` names made from the Certificate mounted there."""
    routes = mount_routes(docs, root / "routes")
    plane, container = next((w, c) for w, c in pavilion_containers(docs) if c["args"][0] == "controlplane")
    route_yaml = YAML(typ="safe", pure=True)  # YAML 1.2, as the loader reads it (`10.96.80.91:9191` in a flow)
    gateway: dict[str, Any] = route_yaml.load((routes / "gateway.yaml").read_text())
    paths = [str(tls[field]) for item in [*gateway["listeners"], *gateway["services"]] if (tls := item.get("tls"))
             for field in ("certificate", "key", "client_ca", "ca") if field in tls]
    text = (routes / "gateway.yaml").read_text()
    for path, made in tls_files(docs, plane, container, paths, root / "secrets").items():
        text = text.replace(path, str(made))
    (routes / "gateway.yaml").resolve().write_text(text)
    return gateway, load_config(routes)


def without_tls(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "tls"} for item in items]


def test_tls_edge_listener_serves_the_edge_certificate(tmp_path: Path) -> None:
    docs = tls_documents()
    gateway, config = tls_route_yaml(docs, tmp_path)
    base = YAML(typ="safe", pure=True).load(named("ConfigMap", "pavilion-gateway")["data"]["gateway.yaml"])
    # only the listeners (port, `tls:`) and the services' `tls:` differ from the base (the services': below)
    assert gateway.keys() == base.keys()
    for key in gateway.keys() - {"listeners", "services"}:
        assert gateway[key] == base[key], key
    assert [item["name"] for item in gateway["listeners"]] == [item["name"] for item in base["listeners"]]
    assert without_tls(gateway["services"]) == without_tls(base["services"])
    plane, container = next((w, c) for w, c in pavilion_containers(docs) if c["args"][0] == "controlplane")
    for item in gateway["listeners"]:
        tls = item.get("tls")
        assert tls, f"listener {item['name']} serves plaintext in the TLS variant"
        edge, cert_name = mounted_file(docs, plane, container, tls["certificate"])
        assert (edge, "tls.key") == mounted_file(docs, plane, container, tls["key"]) and cert_name == "tls.crt"
        assert "server auth" in edge["spec"]["usages"] and edge["spec"]["dnsNames"]
    envoy = next(c for _w, c in containers(docs) if c.get("command") == ["envoy"])
    edge_service = next(s for s in of_kind("Service", docs) if s["spec"].get("type") == "LoadBalancer")
    for listener in config.listeners:
        assert listener.tls is not None and has_port(envoy, listener.port)
        assert any(has_port(envoy, p["targetPort"]) and envoy_port(envoy, p["targetPort"]) == listener.port
                   for p in edge_service["spec"]["ports"]), "the public Service reaches the TLS listener"


def test_tls_envoy_reaches_extauthz_and_ratelimit_over_mtls(tmp_path: Path) -> None:
    """ext_authz and ratelimit serve mTLS with a certificate of the services CA for the name Envoy verifies,
    and accept only client certificates of that CA; the route YAML gives Envoy that CA, that name and a
    client certificate of that CA, mounted in the control plane (which sends them to Envoy over SDS)."""
    docs = tls_documents()
    gateway, config = tls_route_yaml(docs, tmp_path)
    plane, plane_container = next((w, c) for w, c in pavilion_containers(docs) if c["args"][0] == "controlplane")
    xds_cert = parse(plane_container["args"]).xds_tls_cert
    xds_issuer = issuer_of(docs, mounted_file(docs, plane, plane_container, xds_cert)[0])
    by_ip = {s["spec"]["clusterIP"]: s for s in of_kind("Service", docs) if "clusterIP" in s["spec"]}
    served = {}
    assert config.extauthz is not None and config.ratelimit is not None
    for name in (config.extauthz.service, config.ratelimit.service):
        workload, container = next((w, c) for w, c in pavilion_containers(docs) if c["args"][0] == name)
        args = parse(container["args"])
        assert args.tls_cert and args.tls_key and args.tls_client_ca, f"{name} must serve mTLS"
        server, cert_name = mounted_file(docs, workload, container, args.tls_cert)
        assert cert_name == "tls.crt" and (server, "tls.key") == mounted_file(docs, workload, container, args.tls_key)
        assert "server auth" in server["spec"]["usages"], name
        issuer = issuer_of(docs, server)
        assert "ca" in issuer["spec"] and issuer is not xds_issuer, f"{name}: from the services CA, not the xDS one"
        trusted, ca_name = mounted_file(docs, workload, container, args.tls_client_ca)
        assert ca_name == "ca.crt" and issuer_of(docs, trusted) is issuer, f"{name} trusts the services CA"

        raw = next(item for item in gateway["services"] if item["name"] == name)
        tls = raw.get("tls")
        assert tls and tls.keys() >= {"ca", "server_name", "certificate", "key"}, f"{name}: Envoy must use mTLS"
        # the endpoint is the Service's cluster IP: the name verified is that Service's, and the certificate's
        endpoint = config.service(name).endpoints[0]
        service = by_ip[endpoint.host]
        assert service_dns(tls["server_name"]) == (service["metadata"]["name"], NAMESPACE), tls["server_name"]
        assert pods_of(service, docs)[0] is workload and tls["server_name"] in server["spec"]["dnsNames"]
        verifier, ca_name = mounted_file(docs, plane, plane_container, tls["ca"])
        assert ca_name == "ca.crt" and issuer_of(docs, verifier) is issuer, f"{name}: Envoy verifies the services CA"
        client, cert_name = mounted_file(docs, plane, plane_container, tls["certificate"])
        assert cert_name == "tls.crt" and (client, "tls.key") == mounted_file(docs, plane, plane_container, tls["key"])
        assert "client auth" in client["spec"]["usages"] and issuer_of(docs, client) is issuer, name
        loaded = config.service(name).tls
        assert loaded is not None and loaded.server_name == tls["server_name"] and loaded.certificate_chain
        served[name] = server["metadata"]["name"]
    assert len(set(served.values())) == 2, "each service has its own serving certificate"


def envoy_port(container: dict[str, Any], port: int | str) -> int:
    return int(next(p["containerPort"] for p in container["ports"] if port in (p.get("name"), p["containerPort"])))


def test_status_and_peers_reach_every_controlplane_replica_through_a_headless_service(
        docs: list[dict[str, Any]]) -> None:
    plane = named("Deployment", "controlplane", docs)
    replicas = named("Service", "controlplane-replicas", docs)
    spec = replicas["spec"]
    # Headless: the name resolves to each pod, not to one balanced address; not-ready pods included.
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    assert spec["selector"].items() <= plane["spec"]["template"]["metadata"]["labels"].items()
    plane_args = parse(next(c["args"] for _w, c in pavilion_containers(docs) if c["args"][0] == "controlplane"))
    assert service_port(replicas, plane_args.admin_port)
    manifest = (DIR / "20-controlplane.yaml").read_text()
    assert f"pavilion status --replicas controlplane-replicas:{plane_args.admin_port}" in manifest
    # and the replicas find each other through it, for a staged rollout's stages
    assert plane_args.peers == [f"controlplane-replicas:{plane_args.admin_port}"]
