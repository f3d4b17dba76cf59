"""Loading: the example, merging a directory, duplicates across files, YAML 1.2, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import model
from controlplane.config.load import load_config, parse_sources
from pavilion.config_files import Source, yaml_files
from pavilion.errors import ConfigErrors, Location

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "gateway"

BASE = """
regions: [eu-west, us-east]
listeners:
  - {name: public, address: 127.0.0.1, port: 10080}
services:
  - name: accounts
    endpoints:
      - {address: 127.0.0.1:9001, region: eu-west}
      - {address: "[::1]:9002", region: us-east, weight: 3}
"""


def errors_of(*sources: tuple[str, str]) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source(name, text) for name, text in sources])
    return [str(e) for e in caught.value.errors]


def test_example_gateway_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.regions == ("eu-west", "us-east")
    assert [item.name for item in config.listeners] == ["public"]
    assert config.listener("public").port == 10080
    accounts = config.service("accounts")
    assert [(e.host, e.port, e.region) for e in accounts.endpoints] == [
        ("127.0.0.1", 9101, "eu-west"), ("127.0.0.1", 9102, "us-east")]
    assert accounts.health_check == model.HealthCheck("/healthz", 1.0)
    assert accounts.outlier_detection == model.OutlierDetection(3, 1.0, 10.0)
    # files sorted by path: listeners.yaml, routes/accounts.yaml, routes/payments.yaml, services.yaml, tenants.yaml
    assert [r.name for r in config.routes] == ["accounts-health", "accounts", "accounts-admin", "payments-debug",
                                               "payments"]
    route = next(r for r in config.routes if r.name == "accounts")
    assert route.listener == "public"
    assert route.timeout == 2.0
    assert route.retries == model.Retries(3, ("5xx", "reset", "connect-failure"), 0.025, 0.25)
    assert route.request_headers == model.HeaderRules((("x-from", "gateway"),), ("x-debug",))
    assert route.source == Location(str(EXAMPLE / "routes" / "accounts.yaml"), 10, 5)
    split = next(r for r in config.routes if r.name == "payments")
    assert split.backends == (model.Backend("payments", 90), model.Backend("payments-canary", 10))


def test_on_key_is_a_string_in_yaml_1_2() -> None:
    # A YAML 1.1 loader turns the key `on` into True and `yes` into a boolean.
    text = BASE + """
routes:
  - name: accounts
    match: {prefix: /}
    service: accounts
    retries:
      attempts: 2
      on: [reset, retriable-4xx]
"""
    config = parse_sources([Source("a.yaml", text)])
    retries = config.routes[0].retries
    assert retries is not None
    assert retries.on == ("reset", "retriable-4xx")


def test_merged_directory(tmp_path: Path) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "base.yaml").write_text("regions: [eu-west]\nlisteners: [{name: public, address: 0.0.0.0, port: 80}]\n")
    (tmp_path / "more.yml").write_text("regions: [us-east, eu-west]\n")
    (tmp_path / "teams" / "a.yaml").write_text(
        "services: [{name: a, endpoints: [{address: 10.0.0.1:80, region: us-east}]}]\n"
        "routes: [{name: a, match: {prefix: /a}, service: b}]\n")
    (tmp_path / "teams" / "b.yaml").write_text(
        "services: [{name: b, endpoints: [{address: 10.0.0.2:80, region: eu-west}]}]\n"
        "routes: [{name: b, match: {prefix: /b}, service: a}]\n")
    (tmp_path / ".hidden.yaml").write_text("this: is not read\n")
    (tmp_path / "notes.txt").write_text("nor: this\n")
    config = load_config(tmp_path)
    assert config.regions == ("eu-west", "us-east")
    assert [s.name for s in config.services] == ["a", "b"]
    assert [(r.name, r.listener, r.backends[0].service) for r in config.routes] == [("a", "public", "b"),
                                                                                     ("b", "public", "a")]
    assert config.service("b").endpoints[0].host == "10.0.0.2"
    assert [p.name for p in yaml_files(tmp_path)] == ["base.yaml", "more.yml", "a.yaml", "b.yaml"]


def test_duplicate_across_files_names_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(
        "# another team\nservices:\n  - name: accounts\n    endpoints: [{address: 127.0.0.1:9003, region: eu-west}]\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path)
    assert [str(e) for e in caught.value.errors] == [
        f"{tmp_path}/b.yaml:3:11: services[accounts].name: service 'accounts' is already defined at "
        f"{tmp_path}/a.yaml:6:11"]


def test_every_problem_of_every_file_sorted_by_place() -> None:
    found = errors_of(
        ("b.yaml", "routes:\n  - name: r\n    match: {prefix: x}\n    service: nowhere\n"),
        ("a.yaml", BASE + "    connect_timeout: soon\nbogus: 1\n"),
    )
    assert found == [
        "a.yaml:10:22: services[accounts].connect_timeout: "
        "'soon' is not a duration; write a number and a unit, like 250ms, 2s, 5m or 24h",
        "a.yaml:11:1: bogus: unknown field 'bogus'",
        "b.yaml:3:21: routes[r].match.prefix: 'x' must start with '/'",
        "b.yaml:4:14: routes[r].service: unknown service 'nowhere'; known: accounts",
    ]


def test_syntax_error_in_one_file_does_not_hide_others() -> None:
    found = errors_of(("a.yaml", "routes: [\n"), ("b.yaml", "listeners: 3\n"))
    assert found[0].startswith("a.yaml:2:1: YAML syntax error")
    assert found[1] == "b.yaml:1:12: listeners: expected a list, got an integer (3)"


def test_defaults() -> None:
    text = BASE + """
    health_check: {path: /h, interval: 2s}
    circuit_breaker: {max_requests: 10}
    outlier_detection: {}
routes:
  - {name: r, match: {prefix: /}, service: accounts, retries: {attempts: 1, backoff: {base: 1s}}}
"""
    config = parse_sources([Source("a.yaml", text)])
    service = config.services[0]
    assert service.connect_timeout == 1.0
    assert service.endpoints[1] == model.Endpoint("::1", 9002, "us-east", 3)
    assert service.health_check == model.HealthCheck("/h", 2.0, 1.0, 1, 2)
    assert service.circuit_breaker == model.CircuitBreaker(max_requests=10)
    assert service.outlier_detection == model.OutlierDetection()
    route = config.routes[0]
    assert route.hosts == ("*",)
    assert route.timeout is None
    assert route.retries == model.Retries(1, ("5xx", "reset", "connect-failure"), 1.0, 1.0)


def test_several_documents_and_empty_files() -> None:
    config = parse_sources([
        Source("a.yaml", BASE + "---\nroutes: [{name: r, match: {path: /x}, service: accounts}]\n---\n"),
        Source("empty.yaml", "# nothing yet\n"),
    ])
    assert [r.name for r in config.routes] == ["r"]


def test_header_names_are_lower_case_and_match_may_use_pseudo_headers() -> None:
    text = BASE + """
routes:
  - name: r
    match: {prefix: /, headers: {":authority": api.example.com, X-Tenant: acme}, methods: [GET]}
    service: accounts
    response_headers: {add: {X-Served-By: "%HOSTNAME%"}, remove: [Server]}
"""
    route = parse_sources([Source("a.yaml", text)]).routes[0]
    assert route.match.headers == (model.HeaderMatch(":authority", "api.example.com"),
                                   model.HeaderMatch("x-tenant", "acme"))
    assert route.response_headers == model.HeaderRules((("x-served-by", "%HOSTNAME%"),), ("server",))


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="no such file or directory"):
        load_config(tmp_path / "absent")
    with pytest.raises(ConfigErrors, match=r"no \*\.yaml or \*\.yml files here"):
        load_config(tmp_path)


def test_errors_carry_location_and_path() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("a.yaml", BASE + "routes:\n  - {name: r, match: {prefix: /}, service: accounts, "
                                               "retries: {attempts: 1, backoff: {base: 0s}}}\n")])
    (error,) = caught.value.errors
    assert error.location == Location("a.yaml", 11, 93)
    assert error.path == "routes[r].retries.backoff.base"


def test_anchors_aliases_and_merge_keys() -> None:
    text = """
regions: [r]
listeners: [{name: l, address: 127.0.0.1, port: 1}]
services:
  - name: a
    endpoints: &eps [{address: 127.0.0.1:2, region: r}]
    health_check: &hc {path: /h, interval: 1s, timeout: 3s}
  - name: b
    endpoints: *eps
    health_check:
      <<: *hc
      interval: 2s
"""
    b = parse_sources([Source("a.yaml", text)]).services[1]
    assert b.endpoints == (model.Endpoint("127.0.0.1", 2, "r"),)
    assert b.health_check == model.HealthCheck("/h", 2.0, 3.0)
    assert errors_of(("a.yaml", "services:\n  <<: 3\n")) == [
        "a.yaml:2:7: a merge key (<<) takes a mapping or a list of mappings"]


def test_kubernetes_configmap_layout_reads_each_file_once(tmp_path: Path) -> None:
    # A mounted ConfigMap: real files in a hidden timestamped folder, `..data` and top-level symlinks.
    data = tmp_path / "..2026_11_27_14_00_00.123"
    data.mkdir()
    (data / "gateway.yaml").write_text("\ufeff" + BASE, encoding="utf-8")  # with a byte order mark
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "gateway.yaml").symlink_to("..data/gateway.yaml")
    assert yaml_files(tmp_path) == [tmp_path / "gateway.yaml"]
    assert [s.name for s in load_config(tmp_path).services] == ["accounts"]


def test_reload_sees_every_change_to_a_file(tmp_path: Path) -> None:
    # Files are cached by content, so an edit, a revert and a broken edit must each be seen.
    (tmp_path / "a.yaml").write_text(BASE)
    route = "routes: [{name: r, match: {prefix: /}, service: accounts, timeout: %s}]\n"
    (tmp_path / "b.yaml").write_text(route % "1s")
    assert load_config(tmp_path).routes[0].timeout == 1.0
    (tmp_path / "b.yaml").write_text(route % "2s")
    assert load_config(tmp_path).routes[0].timeout == 2.0
    (tmp_path / "b.yaml").write_text(route % "soon")
    with pytest.raises(ConfigErrors, match="'soon' is not a duration"):
        load_config(tmp_path)
    (tmp_path / "b.yaml").write_text(route % "1s")
    assert load_config(tmp_path).routes[0].timeout == 1.0
    (tmp_path / "b.yaml").unlink()
    assert load_config(tmp_path).routes == ()


def test_header_given_twice_in_any_case() -> None:
    text = BASE + "routes:\n  - {name: r, match: {prefix: /}, service: accounts,\n" \
                  "     request_headers: {add: {X-A: '1', x-a: '2'}}}\n"
    assert errors_of(("a.yaml", text)) == [
        "a.yaml:12:40: routes[r].request_headers.add.x-a: 'x-a' is given twice (first at a.yaml:12:30)"]


def test_garbage_collector_is_restored_after_loading() -> None:
    import gc

    assert gc.isenabled()
    parse_sources([Source("a.yaml", BASE)])
    assert gc.isenabled()
    errors_of(("a.yaml", "bogus: 1\n"))
    assert gc.isenabled()
    gc.disable()
    try:
        parse_sources([Source("a.yaml", BASE)])
        assert not gc.isenabled()
    finally:
        gc.enable()
