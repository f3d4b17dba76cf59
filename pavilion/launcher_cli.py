"""`pavilion run --config DIR`: start the whole gateway locally and print what to try.

The processes come from launch_plan.build_plan; this module parses the flags, makes local tenants'
keys, prints the gateway URL, the token command and curl lines derived from the config (a 401
without a token, a 200 with one, a 429 after a burst), and stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from pavilion.launch_plan import build_plan, local_tenant_keys, stores
from pavilion.launcher import BIN, Launcher, LaunchError

__all__ = ["build_plan", "demo_lines", "register", "try_lines"]


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the whole gateway locally on a route YAML directory")
    run.add_argument("--config", required=True, help="directory of route YAML files")
    run.add_argument("--region", default=None, help="the Envoy edge's region (default: the config's first region)")
    run.add_argument("--xds-port", type=int, default=18000)
    run.add_argument("--admin-port", type=int, default=18001, help="control plane admin HTTP (/status)")
    run.add_argument("--envoy-admin-port", type=int, default=9901)
    run.add_argument("--redis-port", type=int, default=16379, help="port of the redis-server it starts")
    run.add_argument("--no-redis", action="store_true", help="keep revocations and counters in memory")
    run.add_argument("--state-dir", default=".run",
                     help="local tenants' keys and Redis files (default .run); a tenant whose jwks file lies "
                          "here gets a key pair generated on first start")
    run.add_argument("--no-upstreams", action="store_true", help="do not start demo echo upstreams")
    run.set_defaults(func=_run)


def _command() -> str:
    """How to call `pavilion` from the current directory (the venv's script when it is not on PATH)."""
    script = BIN / "pavilion"
    try:
        relative = os.path.relpath(script)
    except ValueError:
        relative = str(script)
    return relative if not relative.startswith("..") else str(script)


def _listener_url(listener: Any) -> str:
    """Where a client reaches `listener`: https when it terminates TLS."""
    host = "127.0.0.1" if listener.address in ("0.0.0.0", "::") else listener.address
    return f"{'https' if listener.tls is not None else 'http'}://{host}:{listener.port}"


def _base_url(config: Any, route: Any) -> str | None:
    listener = next((item for item in config.listeners if item.name == route.listener), None)
    return _listener_url(listener) if listener is not None else None


def _path(route: Any) -> str | None:
    if any(q.how == "regex" for q in route.match.query):
        return None  # no one obvious value
    query = "&".join(f"{q.name}={q.value or 1}" for q in route.match.query)
    query = f"?{query}" if query else ""
    if route.match.prefix is not None:
        return str(route.match.prefix).rstrip("/") + "/example" + query
    if route.match.path is not None:
        return str(route.match.path) + query
    return None  # a regex has no one obvious URL


def _options(route: Any) -> str:
    # A value meeting each header condition (a prefix, suffix or contained text is one); none to send for
    # an absent header, and a regex has no one obvious value.
    options = "".join(f" -H '{h.name}: {h.value or 1}'" if h.how != "exact" else f" -H '{h.name}: {h.value}'"
                      for h in route.match.headers if h.how not in ("absent", "regex"))
    if route.match.methods and "GET" not in route.match.methods:
        options += f" -X {route.match.methods[0]}"
    return options


def try_lines(config: Any) -> list[str]:
    """Example curl commands, one per route that a plain URL can reach."""
    lines: list[str] = []
    for route in config.routes:
        base, path = _base_url(config, route), _path(route)
        if base is None or path is None:
            continue
        url = f"'{base}{path}'" if "?" in path else f"{base}{path}"  # a shell would read `&` itself
        lines.append(f"  curl -i{_options(route)} {url}    # route {route.name}")
    return lines


def _admits(route: Any, tenant: str, config: Any) -> bool:
    """Whether the demo token (the tenant's, with no scope or other claim to offer) passes the route."""
    if config.extauthz is None:
        return False
    auth = route.auth
    if auth is None:
        return True
    if auth.public or auth.scopes or auth.claims or auth.client_certificates:
        return False
    return not auth.tenants or tenant in auth.tenants


def demo_lines(config: Any, config_dir: str, tenant: str, redis_url: str | None) -> list[str]:
    """The outcomes with a local tenant's token: 401 without, 200 with, 429 after a burst, 403 without a
    route's scope and 200 with it, 401 once revoked."""
    pavilion = _command()
    reachable = [r for r in config.routes if _base_url(config, r) and _path(r) and _admits(r, tenant, config)]
    if not reachable:
        return []
    lines = [f"  TOKEN=$({pavilion} token --tenant {tenant} --config {shlex.quote(config_dir)})"]
    protected = next((r for r in reachable if not r.rate_limits), reachable[0])
    url = f"{_base_url(config, protected)}{_path(protected)}"
    lines += [f"  curl -i{_options(protected)} {url}    # 401: no token",
              f"  curl -i{_options(protected)} -H \"Authorization: Bearer $TOKEN\" {url}    # 200: the upstream "
              "echoes x-pavilion-tenant and x-pavilion-subject"]
    limited = [(min(_allowed(limit) for limit in r.rate_limits), r) for r in reachable if r.rate_limits]
    if limited:
        allowed, route = min(limited, key=lambda item: item[0])
        if allowed <= 50:
            url = f"{_base_url(config, route)}{_path(route)}"
            lines.append(f"  for i in $(seq {allowed + 1}); do curl -s -o /dev/null -w '%{{http_code}} ' "
                         f"-H \"Authorization: Bearer $TOKEN\"{_options(route)} {url}; done; echo"
                         f"    # {allowed} x 200, then 429 (route {route.name})")
            lines.append(f"  curl -si -H \"Authorization: Bearer $TOKEN\"{_options(route)} {url} | grep -i "
                         "'^ratelimit\\|^retry-after\\|^HTTP'    # the RateLimit headers")
    lines += _scope_lines(config, config_dir, tenant, pavilion)
    from extauthz.token_cli import DEFAULT_SUBJECT

    tenant_entry = next((t for t in config.tenants if t.id == tenant), None)
    if redis_url and tenant_entry is not None:
        lines.append(f"  {pavilion} revoke --redis {redis_url} --tenant {tenant} --issuer {tenant_entry.issuer} "
                     f"--subject {DEFAULT_SUBJECT}    # then the same token is a 401 within a second")
    return lines


def _scope_lines(config: Any, config_dir: str, tenant: str, pavilion: str) -> list[str]:
    """403 for the plain demo token on a route that requires scopes or claim values, 200 for a token
    carrying them (the scopes in `scope`, each claim's first accepted value)."""
    route = next((r for r in config.routes if _base_url(config, r) and _path(r) and config.extauthz is not None
                  and r.auth is not None and (r.auth.scopes or r.auth.claims)
                  and (not r.auth.tenants or tenant in r.auth.tenants)), None)
    if route is None:
        return []
    url = f"{_base_url(config, route)}{_path(route)}"
    wanted = {name: values[0] for name, values in route.auth.claims}
    if route.auth.scopes:
        wanted["scope"] = " ".join(route.auth.scopes)
    needs = ", ".join(f"{name} {value}" for name, value in wanted.items())
    return [f"  curl -i{_options(route)} -H \"Authorization: Bearer $TOKEN\" {url}    # 403 insufficient_scope: "
            f"route {route.name} needs {needs}",
            f"  SCOPED=$({pavilion} token --tenant {tenant} --config {shlex.quote(config_dir)} "
            f"--claims {shlex.quote(json.dumps(wanted))})",
            f"  curl -i{_options(route)} -H \"Authorization: Bearer $SCOPED\" {url}    # 200"]


def _allowed(limit: Any) -> int:
    """Requests a burst gets through before the first 429."""
    return int(limit.requests) + (int(limit.burst) if limit.algorithm == "token_bucket" else 0)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from controlplane.config.load import load_config
    from pavilion.errors import ConfigErrors

    try:
        config = load_config(args.config)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error)
        return 1
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    workdir = str(Path(args.state_dir).resolve() / "logs")
    Path(workdir).mkdir(exist_ok=True)
    store = stores(args, config)
    print(f"starting the gateway on {args.config} (logs in {workdir})", flush=True)
    keys = local_tenant_keys(config, args.state_dir)
    for tenant, key_path, made in keys:
        print(f"  tenant {tenant}: signing key {key_path} ({'generated now' if made else 'kept from last run'})",
              flush=True)
    if store.redis_url is None:
        print(f"  in-memory stores ({store.why_memory}): revocations and rate-limit counters live in each "
              "process's memory and are lost on restart; `pavilion revoke` needs Redis", flush=True)
    launcher = Launcher(build_plan(args, config, workdir), log_dir=workdir)
    # SIGTERM while starting must stop what already started, as Ctrl-C does (children have their own
    # sessions, so nothing else would stop them).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        launcher.start_all()
        listeners = ", ".join(_listener_url(item) for item in config.listeners)
        print(f"\nthe gateway is up: {listeners}\n"
              f"control plane status: http://127.0.0.1:{args.admin_port}/status\n"
              f"envoy admin:          http://127.0.0.1:{args.envoy_admin_port}/\n"
              + (f"redis:                {store.redis_url}\n" if store.redis_url else "")
              + f"edit files in {args.config} and the change is live within a second.\n", flush=True)
        demo = demo_lines(config, args.config, keys[0][0], store.redis_url) if keys else []
        if demo:
            print(f"try, with tenant {keys[0][0]}'s token:", flush=True)
            print("\n".join(demo), flush=True)
        print("\nevery route:\n" + "\n".join(try_lines(config)), flush=True)
        print("\nCtrl-C stops everything.", flush=True)
        code = launcher.wait()
    except LaunchError as exc:
        print(f"pavilion run: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        print("stopping...", flush=True)
        launcher.stop_all()
        print("stopped: " + ", ".join(f"{name} (pid {pid})" for name, pid in launcher.stopped), flush=True)
    return code
