"""docker-compose.yml: the containers it runs hold together with the code and the config they run.

No Docker engine is needed: the file is read as data. Every `pavilion` command parses with the real
CLI parser and binds 0.0.0.0; every address a container is told to reach (--xds, --redis, the route
YAML's endpoints, the Envoy bootstrap's control plane) is a service's fixed `ipv4_address` on the
compose network and a port that service listens on; healthchecks and published ports name ports the
container listens on; the route directory, assembled from the control plane's bind mounts, passes
`pavilion validate`; the Envoy bootstrap is what its recorded command prints and Envoy validates it;
the demo tenant's keys are made where ext_authz reads them.

One integration test runs the services' commands as processes (the checkout standing in for the
image) in a private network namespace that has the compose addresses, and asks the gateway what
`make run` prints: 401 without a token, 200 with one, 5 x 200 then 429.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from controlplane.bootstrap import render_bootstrap, split_address
from controlplane.config.load import load_config
from controlplane.envoy_check import EnvoyNotFound, find_envoy
from extauthz.local_keys import is_local
from pavilion.cli import build_parser
from pavilion.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
IMAGE_USER = 10001  # the Dockerfile's USER
BOOTSTRAP_LABEL = "dev.pavilion.bootstrap-generated-by"


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return doc


DOC = load_compose()
SERVICES: dict[str, dict[str, Any]] = DOC["services"]


def parse(argv: list[str]) -> argparse.Namespace:
    """The real CLI parser; a bad flag fails the test with argparse's own message."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`pavilion {shlex.join(argv)}` does not parse (exit {exc.code})") from exc


def is_pavilion(service: dict[str, Any]) -> bool:
    """Runs the image's entrypoint, `pavilion`, with `command` as its arguments."""
    return service.get("image") == image() and "entrypoint" not in service


def image() -> str:
    built = [s for s in SERVICES.values() if "build" in s]
    assert len(built) == 1, "exactly one service builds the image; the others run it"
    name: str = built[0]["image"]
    return name


def pavilion_args(services: dict[str, dict[str, Any]] | None = None) -> dict[str, argparse.Namespace]:
    return {name: parse(s["command"]) for name, s in (services or SERVICES).items() if is_pavilion(s)}


def address(name: str) -> str:
    ip: str = SERVICES[name]["networks"]["pavilion"]["ipv4_address"]
    return ip


def by_address() -> dict[str, str]:
    return {address(name): name for name, s in SERVICES.items() if "pavilion" in s.get("networks", {})}


def echo_args(service: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for flag in ("--host", "--name", "--region"):
        parser.add_argument(flag, default="")
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args(service["command"])


def redis_port(service: dict[str, Any]) -> int:
    command = service.get("command", [])
    return int(command[command.index("--port") + 1]) if "--port" in command else 6379


def bootstrap_command() -> argparse.Namespace:
    argv = shlex.split(SERVICES["envoy"]["labels"][BOOTSTRAP_LABEL])
    assert argv[0] == "pavilion"
    args = parse(argv[1:])
    assert args.command == "envoy-bootstrap"
    return args


def mount_source(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        source, dest = volume.split(":")[:2]
        if dest == target:
            return Path(ROOT / str(source)).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def envoy_config_path() -> str:
    command = SERVICES["envoy"]["command"]
    path: str = command[command.index("-c") + 1]
    return path


def listens(name: str, config: Any) -> set[tuple[str, int]]:
    """(host, port) the service's process binds inside its container."""
    service = SERVICES[name]
    if name == "redis":
        return {("0.0.0.0", redis_port(service))}
    if service.get("entrypoint") == ["python", "-m", "pavilion.echo"]:
        args = echo_args(service)
        return {(args.host, args.port)}
    if service.get("entrypoint") == ["envoy"]:
        admin = ("127.0.0.1", bootstrap_command().admin_port)  # edge.yaml binds admin to loopback
        return {admin, *((listener.address, listener.port) for listener in config.listeners)}
    if is_pavilion(service):
        args = parse(service["command"])
        if args.command == "controlplane":
            return {(args.host, args.xds_port), (args.host, args.admin_port)}
        metrics = Settings.from_env({k: str(v) for k, v in service.get("environment", {}).items()}).metrics_host
        return {(args.host, args.port), (metrics, args.admin_port)}
    return set()


def reachable(host: str, port: int, config: Any) -> str:
    """The service at host:port, from another container: its fixed address, a port bound on every address."""
    owners = by_address()
    assert host in owners, f"{host} is no service's ipv4_address"
    assert (("0.0.0.0", port) in listens(owners[host], config)), f"{owners[host]} does not listen on {port}"
    return owners[host]


@pytest.fixture(scope="module")
def route_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The control plane's --config as its bind mounts lay it out (a mount inside a mount last)."""
    plane = SERVICES["controlplane"]
    config = parse(plane["command"]).config
    root = tmp_path_factory.mktemp("compose")
    mounts = sorted((v.split(":") for v in plane["volumes"]), key=lambda m: len(Path(m[1]).parts))
    for source, target, *mode in mounts:
        assert mode == ["ro"], f"{target}: the route YAML is mounted read-only"
        assert Path(target).is_relative_to(config), target
        dest = root / Path(target).relative_to(config)
        if dest.exists():  # a bind mount hides what its mount point held
            shutil.rmtree(dest)
        shutil.copytree(ROOT / source, dest)
    return root


@pytest.fixture(scope="module")
def config(route_dir: Path) -> Any:
    return load_config(route_dir)


def test_the_file_is_compose_with_one_image_and_a_fixed_subnet() -> None:
    assert image() == "pavilion:0.1.0"
    assert SERVICES["controlplane"]["build"] == "."
    subnet = ipaddress.ip_network(DOC["networks"]["pavilion"]["ipam"]["config"][0]["subnet"])
    addresses = [address(name) for name, s in SERVICES.items() if "pavilion" in s.get("networks", {})]
    assert len(addresses) == len(set(addresses)), "two services share an address"
    for ip in addresses:
        assert ipaddress.ip_address(ip) in subnet and ipaddress.ip_address(ip) != next(subnet.hosts()), ip
    for name, service in SERVICES.items():
        if name != "redis":
            assert service["image"] == image(), name
        assert "pavilion" in service.get("networks", {}) or service.get("network_mode") == "none", name


def test_pavilion_commands_parse_with_the_real_cli_and_bind_every_address() -> None:
    commands = {args.command for args in pavilion_args().values()}
    assert commands == {"controlplane", "extauthz", "ratelimit"}
    for name, args in pavilion_args().items():
        assert getattr(args, "func", None) is not None, name
        # loopback (the default) would be unreachable from the other containers and the host
        assert args.host == "0.0.0.0", name
        if args.command in ("extauthz", "ratelimit"):  # their admin server (/metrics) binds metrics_host
            env = {k: str(v) for k, v in SERVICES[name].get("environment", {}).items()}
            assert Settings.from_env(env).metrics_host == "0.0.0.0", name


def test_services_reach_the_controlplane_and_redis_at_fixed_addresses(config: Any) -> None:
    plane = parse(SERVICES["controlplane"]["command"])
    for name, args in pavilion_args().items():
        if args.command == "controlplane":
            continue
        host, port = split_address(args.xds)
        assert reachable(host, port, config) == "controlplane" and port == plane.xds_port, (name, args.xds)
        redis = urlsplit(args.redis)
        assert reachable(str(redis.hostname), int(redis.port or 6379), config) == "redis", (name, args.redis)
        assert args.region in config.regions, name
        needs = SERVICES[name]["depends_on"]
        assert needs["controlplane"]["condition"] == needs["redis"]["condition"] == "service_healthy", name


def test_every_healthcheck_asks_a_port_its_container_listens_on(config: Any) -> None:
    for name, service in SERVICES.items():
        if name == "keys":
            assert "healthcheck" not in service
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if name == "redis":
            assert test[1] == "redis-cli" and int(test[test.index("-p") + 1]) == redis_port(service)
            # clients connect from their own addresses: protected mode would answer them with an error
            command = service["command"]
            assert command[command.index("--protected-mode") + 1] == "no"
            continue
        urls = re.findall(r"http://[^'\"]+", " ".join(test))
        assert len(urls) == 1, (name, test)
        url = urlsplit(urls[0])
        assert url.hostname == "127.0.0.1", name  # healthchecks run inside the container
        bound = {port for host, port in listens(name, config) if host in ("0.0.0.0", "127.0.0.1")}
        assert url.port in bound, f"{name}'s healthcheck asks port {url.port}; it listens on {sorted(bound)}"
        expected = "/readyz" if is_pavilion(service) else "/ready" if name == "envoy" else "/healthz"
        assert url.path == expected, name


def test_published_ports_are_loopback_on_the_host_and_bound_in_the_container(config: Any) -> None:
    published = {}
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            assert len(parts) == 3, f"{name}: publish {port} as 127.0.0.1:HOST:CONTAINER"
            host_ip, host_port, container_port = parts
            assert host_ip == "127.0.0.1", (name, port)  # as `make run` binds them
            assert ("0.0.0.0", int(container_port)) in listens(name, config), (name, port)
            published[int(host_port)] = (name, int(container_port))
    # what `make run` prints: the listener, the control plane's /status, Redis for `pavilion revoke`
    plane = parse(SERVICES["controlplane"]["command"])
    assert published == {10080: ("envoy", config.listeners[0].port), 18001: ("controlplane", plane.admin_port),
                         16379: ("redis", redis_port(SERVICES["redis"]))}


def test_the_route_yaml_validates_and_names_the_compose_services(route_dir: Path, config: Any) -> None:
    args = parse(["validate", str(route_dir)])
    assert args.func(args) == 0, "`pavilion validate` refuses the mounted route YAML"
    assert config.routes and config.tenants and config.extauthz and config.ratelimit
    gateway_routes = load_config(ROOT / "examples" / "gateway").routes
    assert [r.name for r in config.routes] == [r.name for r in gateway_routes], "not make run's routes"
    upstreams = set()
    for service in config.services:
        for endpoint in service.endpoints:
            # endpoints are IPs (EDS does not resolve names): each a service's fixed address and port
            name = reachable(endpoint.host, endpoint.port, config)
            upstreams.add(name)
            if SERVICES[name].get("entrypoint") == ["python", "-m", "pavilion.echo"]:
                assert echo_args(SERVICES[name]).region == endpoint.region, (service.name, name)
    own = {"extauthz": config.extauthz.service, "ratelimit": config.ratelimit.service}
    for role, service_name in own.items():
        endpoint = config.service(service_name).endpoints[0]
        assert reachable(endpoint.host, endpoint.port, config) == role
        assert parse(SERVICES[role]["command"]).port == endpoint.port
    needs = SERVICES["envoy"]["depends_on"]
    assert upstreams - {"envoy"} <= needs.keys() | {"controlplane"}
    for name in needs:
        assert needs[name]["condition"] == "service_healthy", f"envoy starts before {name} is healthy"


def test_the_envoy_bootstrap_is_what_its_command_prints(config: Any) -> None:
    args = bootstrap_command()
    path = mount_source(SERVICES["envoy"], envoy_config_path())
    expected = render_bootstrap(node_id=args.node_id, region=args.region, role=args.role,
                                xds_address=args.xds_address, admin_port=args.admin_port, delta=args.delta)
    assert path.read_text() == expected, f"regenerate {path} with the envoy service's {BOOTSTRAP_LABEL} label"
    assert args.region in config.regions
    host, port = split_address(args.xds_address)
    assert reachable(host, port, config) == "controlplane"
    assert port == parse(SERVICES["controlplane"]["command"]).xds_port


def test_envoy_validates_the_bootstrap() -> None:
    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    path = mount_source(SERVICES["envoy"], envoy_config_path())
    done = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_demo_tenant_keys_are_made_where_extauthz_reads_them(config: Any, tmp_path: Path) -> None:
    keys = SERVICES["keys"]
    argv = keys["command"]
    state_dir = argv[argv.index("--state-dir") + 1]
    assert int(argv[argv.index("--owner") + 1]) == IMAGE_USER
    assert parse(SERVICES["extauthz"]["command"]).command == "extauthz"
    assert f"keys:{state_dir}" in keys["volumes"] and f"keys:{state_dir}:ro" in SERVICES["extauthz"]["volumes"]
    assert SERVICES["extauthz"]["depends_on"]["keys"]["condition"] == "service_completed_successfully"
    assert [t.id for t in config.tenants if is_local(t, state_dir)] == ["demo"]
    # the script, run for real against a copy whose key file lies in a temporary state directory
    script = mount_source(keys, str(Path(keys["entrypoint"][1]).parent)) / Path(keys["entrypoint"][1]).name
    routes = tmp_path / "routes"
    shutil.copytree(ROOT / "examples" / "gateway", routes)
    tenants = routes / "tenants.yaml"
    tenants.write_text(tenants.read_text().replace("../../.run/demo-jwks.json", str(tmp_path / "keys" / "d.json")))
    run = [sys.executable, str(script), "--config", str(routes), "--state-dir", str(tmp_path / "keys")]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and "tenant demo: key made" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "keys" / "d.json").is_file() and (tmp_path / "keys" / "demo-key.pem").stat().st_mode & 0o077 == 0
    again = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "tenant demo: key kept" in again.stdout, again.stdout + again.stderr


# --- The wiring run for real, without Docker --------------------------------------------------------
# Every service's command as a process (the image's entrypoint and its mounts swapped for the
# checkout's), in a private network namespace whose loopback carries the compose addresses and a
# private mount namespace with an empty /var/lib (the `keys` volume's path): started in depends_on
# order, each awaited with its own healthcheck command, then asked as `make run` prints.

def start_order() -> list[str]:
    """An order depends_on allows in which each service starts as soon as what it declares is up (the
    services without depends_on in file order otherwise), so what it needs and does not declare is
    not up yet, and the test sees it. A cycle fails the test."""
    order: list[str] = []
    while len(order) < len(SERVICES):
        ready = [n for n, s in SERVICES.items() if n not in order and set(s.get("depends_on", {})) <= set(order)]
        assert ready, f"depends_on has a cycle among {sorted(set(SERVICES) - set(order))}"
        dependents = [n for n in ready if SERVICES[n].get("depends_on")]
        order.append(dependents[0] if dependents else ready[0])
    return order


def host_argv(name: str, routes: Path, state: Path) -> list[str]:
    """The container's command line, run from this checkout."""
    service = SERVICES[name]
    mounts = {"/etc/pavilion/routes": str(routes), envoy_config_path(): str(ROOT / "examples/compose/envoy.yaml"),
              "/etc/pavilion/compose": str(ROOT / "examples/compose")}
    argv = [next((a.replace(k, v) for k, v in mounts.items() if a.startswith(k)), a)
            for a in [*service.get("entrypoint", []), *service["command"]]]
    if name == "redis":
        return [*argv, "--dir", str(state)]
    if "entrypoint" not in service:
        return [str(Path(sys.executable).parent / "pavilion"), *argv]
    if argv[0] == "envoy":
        return [find_envoy(), *argv[1:]]
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def healthy(name: str) -> bool:
    test = [sys.executable if a == "python" else a for a in SERVICES[name]["healthcheck"]["test"][1:]]
    return subprocess.run(test, capture_output=True, timeout=10).returncode == 0


def ask(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return int(response.status), json.loads(body) if is_json else {}
    except urllib.error.HTTPError as exc:
        return int(exc.code), {}


def run_inside(workdir: Path) -> dict[str, Any]:
    """Runs in the namespaces: start everything, ask the gateway, stop everything; what it saw."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for ip in by_address():
        subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/lib"], check=True)
    routes = workdir / "routes"
    shutil.copytree(ROOT / "examples/compose/routes", routes)
    shutil.rmtree(routes / "teams")
    shutil.copytree(ROOT / "examples/gateway/routes", routes / "teams")
    for source, target, *_ in (v.split(":") for v in SERVICES["keys"]["volumes"]):
        if source == "keys":
            Path(target).mkdir(parents=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    seen: dict[str, Any] = {}
    try:
        # one at a time, each healthy before the next: a dependency missing from depends_on shows
        for name in start_order():
            env = {**os.environ, **{k: str(v) for k, v in SERVICES[name].get("environment", {}).items()}}
            argv = host_argv(name, routes, workdir)
            if name == "keys":  # one-shot
                seen["keys"] = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60).stdout
                continue
            with (workdir / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while not healthy(name):
                if procs[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not healthy:\n" + (workdir / f"{name}.log").read_text()[-3000:])
                time.sleep(0.3)
        token = subprocess.run([str(Path(sys.executable).parent / "pavilion"), "token", "--tenant", "demo",
                                "--config", str(routes)], capture_output=True, text=True, check=True).stdout.strip()
        gateway = f"http://{address('envoy')}:10080"
        seen["public"] = ask(f"{gateway}/v1/accounts/healthz")[0]
        seen["no_token"] = ask(f"{gateway}/v1/accounts/example")[0]
        seen["token"] = ask(f"{gateway}/v1/accounts/example", token)
        seen["payments"] = [ask(f"{gateway}/v1/payments/example", token)[0] for _ in range(6)]
        seen["status"] = ask(f"http://{address('controlplane')}:18001/status")[0]
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return seen


def namespaces_work() -> bool:
    if not all(shutil.which(tool) for tool in ("unshare", "ip", "redis-server", "redis-cli")):
        return False
    try:
        find_envoy()
    except EnvoyNotFound:
        return False
    probe = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.integration
def test_the_wiring_serves_as_make_run_does(tmp_path: Path) -> None:
    if not namespaces_work():
        pytest.skip("needs root's unshare (network and mount namespaces), ip, redis-server and envoy")
    proc = subprocess.Popen(["unshare", "-n", "-m", "--propagation", "private", sys.executable, __file__,
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the services are in its process group
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    seen = json.loads(out.splitlines()[-1])
    assert "tenant demo: key made" in seen["keys"]
    assert (seen["public"], seen["no_token"], seen["status"]) == (200, 401, 200)
    status, body = seen["token"]
    assert status == 200 and body["name"] == "accounts-eu-west", body
    headers = {name.lower(): value for name, value in body["headers"].items()}  # ext_authz's claims, upstream
    assert (headers.get("x-pavilion-tenant"), headers.get("x-user-id")) == ("demo", "demo-user"), headers
    assert seen["payments"] == [200] * 5 + [429]


if __name__ == "__main__":  # the test above runs this file in the namespaces
    print(json.dumps(run_inside(Path(sys.argv[1]))))
