"""Route `cors`, `redirect`, `direct_response` and listener `redirect_to_https`: what loads into the
model, and every refusal as a `FILE:LINE:COL: path: message` naming what to change."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config import model
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import make_ca, write_pair

BASE = """regions: [eu-west]
listeners:
  - {name: public, address: 127.0.0.1, port: 10080}
services:
  - name: accounts
    endpoints: [{address: 127.0.0.1:9001, region: eu-west}]
  - name: extauthz
    protocol: grpc
    endpoints: [{address: 127.0.0.1:9002, region: eu-west}]
extauthz: {service: extauthz}
tenants:
  - {id: acme, issuer: https://idp.acme.test, audiences: [api], jwks: {uri: https://idp.acme.test/jwks}}
routes:
"""
GOOD_CORS = """  - name: accounts
    match: {prefix: /v1/accounts, methods: [GET, POST]}
    service: accounts
    cors:
      allow_origins: [https://App.Example.com, "https://*.example.com:8443", http://127.0.0.1:5173, "http://[::1]:5173"]
      allow_methods: [GET, POST]
      allow_headers: [Authorization, DPoP, content-type]
      expose_headers: [www-authenticate, dpop-nonce]
      max_age: 10m
"""


def load(routes: str, base: str = BASE, name: str = "gateway.yaml") -> model.Config:
    return parse_sources([Source(name, base + routes)])


def errors_of(routes: str, base: str = BASE, name: str = "gateway.yaml") -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(routes, base, name)
    return [str(e) for e in caught.value.errors]


def test_cors_loads_with_origins_split_into_exact_and_patterns() -> None:
    (route,) = load(GOOD_CORS).routes
    assert route.cors == model.Cors(
        exact_origins=("https://app.example.com", "http://127.0.0.1:5173", "http://[::1]:5173"),
        origin_patterns=(r"https://([a-z0-9-]+\.)+example\.com:8443",),
        allow_methods=("GET", "POST"), allow_headers=("authorization", "dpop", "content-type"),
        expose_headers=("www-authenticate", "dpop-nonce"), max_age=600, allow_credentials=False)
    assert route.backends == (model.Backend("accounts", 100),)


def test_cors_star_alone_and_defaults() -> None:
    (route,) = load("""  - name: open
    match: {prefix: /}
    service: accounts
    cors: {allow_origins: ["*"]}
""").routes
    assert route.cors == model.Cors(origin_patterns=(".*",))


@pytest.mark.parametrize(("cors", "error"), [
    ('{allow_origins: ["*"], allow_credentials: true}',
     "gateway.yaml:17:28: routes[r].cors.allow_origins[0]: '*' cannot be used with allow_credentials: browsers "
     "refuse credentials for any origin (Fetch standard); list the origins"),
    ('{allow_origins: ["*", "https://a.example.com"]}',
     "gateway.yaml:17:28: routes[r].cors.allow_origins[0]: '*' already allows every origin; list nothing else with it"),
    ("{allow_origins: [https://a.example.com, https://A.example.com]}",
     "gateway.yaml:17:51: routes[r].cors.allow_origins[1]: origin 'https://a.example.com' is listed twice "
     "(first at gateway.yaml:17:28)"),
    ("{allow_origins: [app.example.com]}",
     "gateway.yaml:17:28: routes[r].cors.allow_origins[0]: 'app.example.com' is not an origin: write scheme://host "
     "or scheme://host:port, like https://app.example.com (http or https, no path and no trailing /)"),
    ("{allow_origins: [https://app.example.com/]}", "is not an origin"),
    ("{allow_origins: ['https://a.*.example.com']}", "a wildcard is written *.example.com"),
    ("{allow_origins: ['https://*.com']}", "*. must be followed by a domain of two labels or more"),
    ("{allow_origins: ['http://[::g]:80']}", "'[::g]' is not an IPv6 address"),
    ("{allow_origins: [null]}", "expected a string, got nothing (null)"),
    ("{allow_origins: []}", "routes[r].cors.allow_origins: needs at least 1 item"),
    ("{allow_methods: [GET]}",
     "gateway.yaml:17:11: routes[r].cors.allow_origins: required field 'allow_origins' is missing"),
    ("{allow_origins: [https://a.example.com], allow_headers: ['*']}",
     "routes[r].cors.allow_headers[0]: name the headers: '*' never covers Authorization"),
    ("{allow_origins: [https://a.example.com], allow_headers: [dpop, DPoP]}",
     "routes[r].cors.allow_headers[1]: 'dpop' is listed twice"),
    ("{allow_origins: [https://a.example.com], allow_methods: [get]}", "'get' is not one of GET"),
    ("{allow_origins: [https://a.example.com], max_age: 1.5s}",
     "routes[r].cors.max_age: '1.5s' must be a whole number of seconds, 0 or more"),
    ("{allow_origins: [https://a.example.com], max_age: 600}",
     "routes[r].cors.max_age: expected a duration of whole seconds, like 10m, got an integer (600)"),
    ("{allow_origins: [https://a.example.com], allow_origin: [x]}", "unknown field 'allow_origin'"),
])
def test_cors_refusals(cors: str, error: str) -> None:
    errors = errors_of(f"""  - name: r
    match: {{prefix: /}}
    service: accounts
    cors: {cors}
""")
    assert len(errors) == 1 and error in errors[0], errors


def test_a_long_wildcard_origin_too_large_for_envoy_is_refused() -> None:
    long_domain = ".".join(["abcdefghij"] * 9)
    (error,) = errors_of(f"""  - name: r
    match: {{prefix: /}}
    service: accounts
    cors: {{allow_origins: ['https://*.{long_domain}']}}
""")
    assert "routes[r].cors.allow_origins[0]" in error and "too long a wildcard for Envoy" in error


def test_redirect_and_direct_response_load_without_a_service_nor_a_token() -> None:
    config = load("""  - name: old
    match: {prefix: /old/}
    redirect: {host: New.Example.com, prefix_rewrite: /new/, code: 308, strip_query: true}
  - name: secure
    match: {prefix: /}
    redirect: {https: true, port: 8443}
  - name: health
    match: {path: /healthz}
    direct_response: {status: 204}
  - name: teapot
    match: {path: /tea}
    direct_response: {status: 418, body: "short and stout\\n"}
    auth: {tenants: [acme]}
""")
    routes = {r.name: r for r in config.routes}
    assert routes["old"].redirect == model.Redirect(host="new.example.com", prefix_rewrite="/new/", code=308,
                                                    strip_query=True)
    assert routes["secure"].redirect == model.Redirect(https=True, port=8443)
    assert routes["health"].direct_response == model.DirectResponse(204)
    assert routes["teapot"].direct_response == model.DirectResponse(418, "short and stout\n")
    assert all(r.backends == () for r in config.routes)
    # No token on a redirect or direct response unless `auth` asks for one.
    assert routes["old"].auth == routes["health"].auth == model.RouteAuth(public=True)
    assert routes["teapot"].auth == model.RouteAuth(tenants=("acme",))


@pytest.mark.parametrize(("route", "error"), [
    ("service: accounts\n    redirect: {https: true}",
     "gateway.yaml:17:5: routes[r]: give only one of service, backends, redirect or direct_response "
     "(found service and redirect)"),
    ("redirect: {https: true}\n    direct_response: {status: 200}",
     "give only one of service, backends, redirect or direct_response (found redirect and direct_response)"),
    ("redirect: {code: 302}",
     "gateway.yaml:16:15: routes[r].redirect: give at least one of https, host, port, path or prefix_rewrite; "
     "a redirect to the same URL would loop"),
    ("redirect: {path: /a, prefix_rewrite: /b}",
     "gateway.yaml:16:42: routes[r].redirect.prefix_rewrite: give path or prefix_rewrite, not both"),
    ("redirect: {https: true, code: 304}",
     "gateway.yaml:16:35: routes[r].redirect.code: 304 is not a redirect code; one of 301, 302, 303, 307, 308"),
    ("redirect: {https: true, code: 200}", "routes[r].redirect.code: must be at least 301 and at most 308"),
    ("redirect: {host: 'a.example.com:8443'}",
     "routes[r].redirect.host: 'a.example.com:8443' is not a host name; give the port in `port`"),
    ("redirect: {path: relative}", "routes[r].redirect.path: 'relative' must start with '/'"),
    ("redirect: {https: true}\n    timeout: 2s",
     "gateway.yaml:17:14: routes[r].timeout: timeout applies to a route that calls a service, not to a redirect"),
    ("direct_response: {status: 200}\n    retries: {attempts: 2}",
     "routes[r].retries: retries applies to a route that calls a service, not to a direct_response"),
    ("direct_response: {status: 200}\n    rewrite: {prefix: /x}",
     "routes[r].rewrite: rewrite applies to a route that calls a service, not to a direct_response"),
    ("direct_response: {status: 200}\n    cors: {allow_origins: ['*']}",
     "routes[r].cors: cors applies to a route that calls a service, not to a direct_response"),
    ("direct_response: {status: 199}", "routes[r].direct_response.status: must be at least 200 and at most 599"),
    ("direct_response: {body: hi}", "routes[r].direct_response.status: required field 'status' is missing"),
    (f"direct_response: {{status: 200, body: {'x' * 4097}}}",
     "routes[r].direct_response.body: body is 4097 bytes, more than the 4096 Envoy accepts"),
])
def test_redirect_and_direct_response_refusals(route: str, error: str) -> None:
    errors = errors_of(f"""  - name: r
    match: {{prefix: /}}
    {route}
""")
    assert len(errors) == 1 and error in errors[0], errors


def test_prefix_rewrite_of_a_redirect_needs_a_prefix_match() -> None:
    (error,) = errors_of("""  - name: r
    match: {regex: /old/.*}
    redirect: {prefix_rewrite: /new/}
""")
    assert error == ("gateway.yaml:16:32: routes[r].redirect.prefix_rewrite: prefix_rewrite needs a prefix or path "
                     "match, not a regex")


def test_rate_limits_are_refused_on_a_redirect() -> None:
    base = BASE.replace("extauthz: {service: extauthz}",
                        "extauthz: {service: extauthz}\nratelimit: {service: extauthz}")
    (error,) = errors_of("""  - name: r
    match: {prefix: /}
    redirect: {https: true}
    rate_limits: [{per: [tenant, subject], unit: second, requests: 5}]
""", base)
    assert "routes[r].rate_limits: rate_limits applies to a route that calls a service, not to a redirect" in error


LISTENERS = """regions: [eu-west]
listeners:
  - {{name: plain, address: 127.0.0.1, port: 10080, redirect_to_https: {target}}}
  - {{name: public, address: 127.0.0.1, port: 10443{tls}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
"""
TLS = ", tls: {certificate: edge.pem, key: edge-key.pem}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    write_pair(directory, *make_ca().issue("edge"))
    return directory


def test_redirect_to_https_takes_the_tls_listener_port_and_routes_go_to_the_other(certs: Path) -> None:
    config = load("  - {name: accounts, match: {prefix: /}, service: accounts}\n",
                  LISTENERS.format(target="public", tls=TLS), str(certs / "gateway.yaml"))
    assert config.listener("plain").https_port == 10443
    assert config.listener("public").https_port is None
    # Only one listener takes routes: a route without `listener` goes there.
    assert [r.listener for r in config.routes] == ["public"]


@pytest.mark.parametrize(("target", "tls", "error"), [
    ("public", "", "3:71: listeners[plain].redirect_to_https: listener 'public' has no tls: redirect_to_https "
                   "names the listener serving https"),
    ("pubic", TLS, "3:71: listeners[plain].redirect_to_https: unknown listener 'pubic'; listeners with tls: public"),
    ("plain", TLS, "3:71: listeners[plain].redirect_to_https: a listener cannot redirect to itself"),
    ("bad name!", TLS, "listeners[plain].redirect_to_https: a name starts with a letter or digit"),
])
def test_redirect_to_https_refusals(certs: Path, target: str, tls: str, error: str) -> None:
    errors = errors_of("  - {name: accounts, listener: public, match: {prefix: /}, service: accounts}\n",
                       LISTENERS.format(target=target, tls=tls), str(certs / "gateway.yaml"))
    assert len(errors) == 1 and error in errors[0], errors


def test_redirect_to_https_on_a_tls_listener_is_refused(certs: Path) -> None:
    base = LISTENERS.format(target="public", tls=TLS).replace(
        "redirect_to_https: public}", "redirect_to_https: public" + TLS + "}")
    errors = errors_of("  - {name: accounts, listener: public, match: {prefix: /}, service: accounts}\n",
                       base, str(certs / "gateway.yaml"))
    assert len(errors) == 1 and "a listener with tls already serves https" in errors[0], errors


def test_a_route_on_a_redirecting_listener_is_refused(certs: Path) -> None:
    (error,) = errors_of("  - {name: accounts, listener: plain, match: {prefix: /}, service: accounts}\n",
                         LISTENERS.format(target="public", tls=TLS), str(certs / "gateway.yaml"))
    assert error.endswith("routes[accounts].listener: listener 'plain' redirects every request to https "
                          "(redirect_to_https): name the https listener")


@pytest.mark.parametrize(("route", "valid"), [
    (GOOD_CORS, True),
    ("  - {name: r, match: {prefix: /}, redirect: {https: true, code: 308}}\n", True),
    ("  - {name: r, match: {prefix: /}, direct_response: {status: 204}}\n", True),
    ("  - {name: r, match: {prefix: /}, service: accounts, cors: {allow_origins: [app.example.com]}}\n", False),
    ("  - {name: r, match: {prefix: /}, service: accounts,\n"
     "     cors: {allow_origins: ['https://a.b'], allow_headers: ['*']}}\n", False),
    ("  - {name: r, match: {prefix: /}, redirect: {https: true, code: 304}}\n", False),
    ("  - {name: r, match: {prefix: /}, redirect: {code: 302}}\n", False),
    ("  - {name: r, match: {prefix: /}, service: accounts, direct_response: {status: 200}}\n", False),
    (f"  - {{name: r, match: {{prefix: /}}, direct_response: {{status: 200, body: {'x' * 4097}}}}}\n", False),
])
def test_the_editor_schema_agrees(route: str, valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = YAML(typ="safe", pure=True).load(BASE + route)
    assert (not list(validator.iter_errors(document))) is valid
