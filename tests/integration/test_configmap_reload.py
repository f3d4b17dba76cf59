"""Config reload under Kubernetes: each Pavilion process reads a ConfigMap volume that kubelet
updates by its symlink swap (tests/configmap.py), and picks the change up; a broken edit keeps the
last good config; the hidden `..data` and timestamped directories are never read as more config."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from controlplane.cache import config_version as plane_version
from controlplane.config.load import load_config as load_routes
from pavilion.config_files import yaml_files
from ratelimit.app import file_version as ratelimit_version
from ratelimit.config import load_config as load_ratelimit
from tests.configmap import ConfigMapVolume
from tests.extauthz.issuer import cached_key
from tests.integration.gateway_procs import ControlPlane, start_controlplane
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

KUBELET_PACE = pytest.mark.parametrize("pause", [0.0, 0.3], ids=["back-to-back", "slow-kubelet"])
DEADLINE = 20.0  # generous: the machine is shared; only the event is asserted, never its speed


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def wait_for(probe: Callable[[], Any], done: Callable[[Any], bool], what: str, seconds: float = DEADLINE) -> Any:
    """Poll `probe()` until `done(value)`; the last value is shown on timeout."""
    deadline = time.monotonic() + seconds
    value: Any = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (urllib.error.URLError, OSError) as exc:
            value = exc
        else:
            if done(value):
                return value
        time.sleep(0.05)
    raise TimeoutError(f"not {what} after {seconds}s; last: {json.dumps(value, default=str)[:3000]}")


def plain_copy(tmp_path: Path, name: str, files: Mapping[str, str]) -> Path:
    """The same files in an ordinary directory: what a correct reader of the volume must see."""
    root = tmp_path / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for key, text in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(text)
    return root


# --- control plane: the route directory is the ConfigMap volume --------------------------------------

GATEWAY = """
regions: [eu-west]
listeners:
  - {name: public, address: 127.0.0.1, port: %d}
services:
  - name: blue
    endpoints: [{address: 127.0.0.1:%d, region: eu-west}]
  - name: green
    endpoints: [{address: 127.0.0.1:%d, region: eu-west}]
"""


def routes(*entries: tuple[str, str, str]) -> str:
    return "routes:\n" + "".join(f"  - {{name: {n}, match: {{prefix: {p}}}, service: {s}}}\n" for n, p, s in entries)


def plane_routes(plane: ControlPlane) -> dict[str, Any]:
    return get_json(f"http://127.0.0.1:{plane.admin_port}/status/routes")


def source_file(route: dict[str, Any]) -> str:
    return str(route["source"]).rsplit(":", 2)[0]  # FILE:LINE:COL


def served_route_table(plane: ControlPlane) -> str:
    """The RouteConfiguration an eu-west Envoy is sent, as text."""
    body = get_json(f"http://127.0.0.1:{plane.admin_port}/resources?region=eu-west&text=1"
                    "&name=RouteConfiguration/public")
    return str(body["types"]["RouteConfiguration"]["public"]["text"])


@pytest.fixture
def plane_volume(pause: float, tmp_path: Path) -> Iterator[tuple[ControlPlane, ConfigMapVolume]]:
    gateway = GATEWAY % (free_port(), free_port(), free_port())
    volume = ConfigMapVolume(tmp_path / "routes", {"gateway.yaml": gateway, "routes.yaml": routes(("a", "/a", "blue"))},
                             pause=pause)
    plane = start_controlplane(volume.root)
    try:
        yield plane, volume
    finally:
        plane.proc.stop()


@KUBELET_PACE
def test_controlplane_serves_a_configmap_swap_and_keeps_the_last_good_one(
        plane_volume: tuple[ControlPlane, ConfigMapVolume], tmp_path: Path) -> None:
    plane, volume = plane_volume
    gateway = volume.path("gateway.yaml").read_text()
    first = plane_routes(plane)
    assert [(r["name"], source_file(r)) for r in first["routes"]] == [("a", str(volume.path("routes.yaml")))]

    # A swap that changes a route's service and adds a key (a new visible symlink) with another route.
    files = {"gateway.yaml": gateway, "routes.yaml": routes(("a", "/a", "green")),
             "more.yaml": routes(("b", "/b", "blue"))}
    expected = plane_version(load_routes(plain_copy(tmp_path, "plain", files)))
    assert expected != first["version"]
    volume.update(files)
    status = wait_for(plane.status, lambda s: s["version"] == expected, "serving the swapped ConfigMap")
    assert status["last_rejected"] is None
    listed = plane_routes(plane)["routes"]
    # each route once, from the visible file: nothing read twice through `..data` or `..<timestamp>`
    assert sorted((r["name"], source_file(r)) for r in listed) == [
        ("a", str(volume.path("routes.yaml"))), ("b", str(volume.path("more.yaml")))]
    table = served_route_table(plane)
    assert table.count('cluster: "green"') == 1 and table.count('cluster: "blue"') == 1, table

    # A broken edit delivered by a swap: rejected with the visible file's name, the last good one served.
    applied = status["reloads"].get("applied", 0)
    broken = {**files, "routes.yaml": "routes:\n  - name: a\n    match: {prefix: /a}\n    service: nowhere\n"}
    volume.update(broken)
    status = wait_for(plane.status, lambda s: s["last_rejected"] is not None, "rejecting the broken swap")
    errors = status["last_rejected"]["errors"]
    assert any(e.startswith(f"{volume.path('routes.yaml')}:4:") and "nowhere" in e for e in errors), errors
    assert not any(".." in e.split(":")[0] for e in errors), errors
    assert status["version"] == expected
    assert served_route_table(plane) == table
    assert plane.proc.alive()

    # The fix, with a key removed (its symlink goes): served, and the removed file's route is gone.
    fixed = {"gateway.yaml": gateway, "routes.yaml": routes(("a", "/a", "blue"))}
    expected = plane_version(load_routes(plain_copy(tmp_path, "plain", fixed)))
    volume.update(fixed)
    status = wait_for(plane.status, lambda s: s["version"] == expected, "serving the fixed ConfigMap")
    assert [r["name"] for r in plane_routes(plane)["routes"]] == ["a"]
    assert status["reloads"].get("applied", 0) > applied
    assert not volume.path("more.yaml").exists()


@KUBELET_PACE
def test_controlplane_reads_files_the_configmap_projects_into_folders(pause: float, tmp_path: Path) -> None:
    """`items: [{key: ..., path: teams/accounts.yaml}]`: the visible entry is the folder symlink
    `teams -> ..data/teams`; its files are config like any other, read once each."""
    gateway = GATEWAY % (free_port(), free_port(), free_port())
    files = {"gateway.yaml": gateway, "teams/accounts.yaml": routes(("a", "/a", "blue"))}
    volume = ConfigMapVolume(tmp_path / "routes", files, pause=pause)
    assert (volume.root / "teams").is_symlink()
    plane = start_controlplane(volume.root)
    try:
        status = wait_for(plane.status, lambda s: s["version"] is not None, "serving the first config")
        assert status["version"] == plane_version(load_routes(plain_copy(tmp_path, "plain", files)))
        listed = plane_routes(plane)["routes"]
        assert [(r["name"], source_file(r)) for r in listed] == [("a", str(volume.root / "teams/accounts.yaml"))]

        files = {**files, "teams/payments.yaml": routes(("p", "/p", "green"))}
        expected = plane_version(load_routes(plain_copy(tmp_path, "plain", files)))
        volume.update(files)
        wait_for(plane.status, lambda s: s["version"] == expected, "serving the new file in the folder")
        assert sorted(r["name"] for r in plane_routes(plane)["routes"]) == ["a", "p"]

        # A new folder: its visible symlink is the swap's last step, after every YAML file event.
        files = {**files, "ops/health.yaml": routes(("h", "/h", "blue"))}
        expected = plane_version(load_routes(plain_copy(tmp_path, "plain", files)))
        volume.update(files)
        wait_for(plane.status, lambda s: s["version"] == expected, "serving the file of the new folder")
        assert sorted(r["name"] for r in plane_routes(plane)["routes"]) == ["a", "h", "p"]
    finally:
        plane.proc.stop()


# --- ratelimit --config DIR ----------------------------------------------------------------------------

def limits(domain: str, requests: int) -> str:
    return (f"domain: {domain}\ndescriptors:\n  - key: tenant\n"
            f"    rate_limit: {{unit: minute, requests_per_unit: {requests}}}\n")


def start_service(argv: list[str], name: str) -> tuple[Proc, int]:
    admin = free_port()
    proc = Proc([PAVILION, "--log-format", "console", *argv, "--port", str(free_port()),
                 "--admin-port", str(admin)], name=name)
    try:
        proc.wait_http(f"http://127.0.0.1:{admin}/readyz")
    except BaseException:
        proc.stop()
        raise
    return proc, admin


@KUBELET_PACE
def test_ratelimit_directory_reloads_on_a_configmap_swap(pause: float, tmp_path: Path) -> None:
    files = {"api.yaml": limits("api", 7)}
    volume = ConfigMapVolume(tmp_path / "limits", files, pause=pause)
    proc, admin = start_service(["ratelimit", "--config", str(volume.root)], "ratelimit")
    status_url = f"http://127.0.0.1:{admin}/status"
    try:
        first = get_json(status_url)
        assert first["config_version"] == ratelimit_version(load_ratelimit(plain_copy(tmp_path, "plain", files)))

        # Changed limit and a new key with a second domain, projected into a folder. Were the hidden
        # copies read, a domain would be defined twice (an error) or the version would differ from
        # the plain copy's; were the folder symlink not followed, `web` would be missing.
        files = {"api.yaml": limits("api", 8), "more/web.yaml": limits("web", 3)}
        expected = ratelimit_version(load_ratelimit(plain_copy(tmp_path, "plain", files)))
        volume.update(files)
        wait_for(lambda: get_json(status_url), lambda s: s["config_version"] == expected, "reloaded after the swap")

        broken = "domain: api\ndescriptors: [{key: tenant, rate_limit: {unit: fortnight}}]\n"
        volume.update({**files, "api.yaml": broken})
        status = wait_for(lambda: get_json(status_url), lambda s: s["last_error"] is not None,
                          "refusing the broken swap")
        assert "api.yaml" in status["last_error"] and "..data" not in status["last_error"], status
        assert status["config_version"] == expected

        files = {"api.yaml": limits("api", 9)}  # the fix; more/web.yaml removed
        expected = ratelimit_version(load_ratelimit(plain_copy(tmp_path, "plain", files)))
        volume.update(files)
        wait_for(lambda: get_json(status_url),
                 lambda s: s["config_version"] == expected and s["last_error"] is None, "reloaded after the fix")
        assert proc.alive()
    finally:
        proc.stop()


# --- extauthz --config FILE, FILE being a key of a ConfigMap volume ----------------------------------

JWK = json.dumps({"keys": [cached_key("ES256")[1]]})


def tenant(tenant_id: str) -> str:
    return (f"  - id: {tenant_id}\n    issuer: https://{tenant_id}.test\n    audiences: [api]\n"
            f"    algorithms: [ES256]\n    jwks: {{inline: {JWK}}}\n")


@KUBELET_PACE
def test_extauthz_file_reloads_on_a_configmap_swap(pause: float, tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "tenants", {"tenants.yaml": "tenants:\n" + tenant("acme")}, pause=pause)
    assert volume.path("tenants.yaml").is_symlink()
    proc, admin = start_service(["extauthz", "--config", str(volume.path("tenants.yaml"))], "extauthz")

    def tenant_ids() -> list[str]:
        return [t["tenant"] for t in get_json(f"http://127.0.0.1:{admin}/keys")["tenants"]]

    status_url = f"http://127.0.0.1:{admin}/status"
    try:
        assert tenant_ids() == ["acme"]
        first = get_json(status_url)["config_version"]

        volume.update({"tenants.yaml": "tenants:\n" + tenant("acme") + tenant("beta")})
        wait_for(tenant_ids, lambda ids: ids == ["acme", "beta"], "serving the swapped tenants")
        second = get_json(status_url)["config_version"]
        assert second != first

        volume.update({"tenants.yaml": "tenants:\n  - id: acme\n    issuer: not a url\n"})
        status = wait_for(lambda: get_json(status_url), lambda s: s["last_error"] is not None,
                          "refusing the broken swap")
        assert "tenants.yaml" in status["last_error"] and "..data" not in status["last_error"], status
        assert status["config_version"] == second and tenant_ids() == ["acme", "beta"]

        volume.update({"tenants.yaml": "tenants:\n" + tenant("beta")})
        wait_for(tenant_ids, lambda ids: ids == ["beta"], "serving the fixed tenants")
        assert get_json(status_url)["last_error"] is None
        assert proc.alive()
    finally:
        proc.stop()


def test_extauthz_key_file_of_the_same_configmap_is_reread_after_a_swap(tmp_path: Path) -> None:
    """tenants.yaml names `jwks: {file: keys.json}`, another key of the volume: a swap that changes
    only keys.json (a key rotation) reaches the tenant, though tenants.yaml itself is unchanged."""
    tenants = ("tenants:\n  - id: acme\n    issuer: https://acme.test\n    audiences: [api]\n"
               "    algorithms: [ES256]\n    jwks: {file: keys.json}\n")
    old, new = cached_key("ES256", "old")[1], cached_key("ES256", "new")[1]
    volume = ConfigMapVolume(tmp_path / "tenants", {"tenants.yaml": tenants, "keys.json": json.dumps({"keys": [old]})})
    proc, admin = start_service(["extauthz", "--config", str(volume.path("tenants.yaml"))], "extauthz")

    def kids() -> list[str]:
        return list(get_json(f"http://127.0.0.1:{admin}/keys")["tenants"][0]["kids"])

    try:
        wait_for(kids, lambda found: found == [old["kid"]], "loading the first key")
        volume.update({"tenants.yaml": tenants, "keys.json": json.dumps({"keys": [new]})})
        # the key file is polled every 2 s (extauthz.keys.FILE_POLL): 10 s is five polls
        wait_for(kids, lambda found: found == [new["kid"]], "loading the rotated key", seconds=10)
        assert proc.alive()
    finally:
        proc.stop()


# --- the walk itself (no process) ----------------------------------------------------------------------

def test_config_files_follow_folder_links_once_and_never_hidden_ones(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"a.yaml": "x: 1\n", "teams/b.yaml": "x: 2\n", "teams/c.txt": "no\n"})
    assert yaml_files(volume.root) == [volume.path("a.yaml"), volume.root / "teams" / "b.yaml"]
    plain = plain_copy(tmp_path, "plain", {"a.yaml": "x: 1\n", "sub/b.yaml": "x: 2\n"})
    (plain / "sub" / "up").symlink_to("..")  # a link back to an ancestor: walked once, no endless loop
    assert yaml_files(plain) == [plain / "a.yaml", plain / "sub" / "b.yaml"]
