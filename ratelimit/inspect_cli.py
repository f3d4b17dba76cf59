"""`pavilion ratelimit-inspect --admin HOST:PORT [--domain D] DESCRIPTOR...`: a rate-limit service's
/limits (ratelimit/inspect.py) as a table, one row per limit of each descriptor, or `--json`.

A DESCRIPTOR is `key=value[,key=value...]`, as /limits takes it; percent-encoded here, so values may
hold any character but `,`. Exit status: 0 when the service answered, 2 when it refused the query
(the message names the parameter), 1 when it cannot be asked. Standard library only, like `pavilion status`.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pavilion.text_table import table

TIMEOUT = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ratelimit-inspect", help="why is a client limited? a rate-limit service's rules and counters for "
                                  "descriptors, read without consuming (the service needs --inspect)")
    parser.add_argument("--admin", required=True, metavar="HOST:PORT", help="the service's --admin-port")
    parser.add_argument("--domain", default=None, help="the descriptors' domain (may be left out when the "
                                                       "config has only one)")
    parser.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    parser.add_argument("descriptors", nargs="+", metavar="DESCRIPTOR",
                        help="key=value[,key=value...]: the entries of one descriptor, in order")
    parser.set_defaults(func=run_inspect)


def limits_url(admin: str, domain: str | None, descriptors: list[str]) -> str:
    """The /limits URL; each key and value percent-encoded so `=`, `%` in a value survive the split."""
    params = [("domain", domain)] if domain else []
    for descriptor in descriptors:
        entries = []
        for part in descriptor.split(","):
            key, sep, value = part.partition("=")
            entries.append(urllib.parse.quote(key, safe="") + (sep + urllib.parse.quote(value, safe="") if sep else ""))
        params.append(("descriptor", ",".join(entries)))
    return f"http://{admin}/limits?{urllib.parse.urlencode(params)}"


def render(answer: dict[str, Any]) -> str:
    store = answer.get("store", {})
    backend = answer["backend"]
    head = f"domain {answer['domain']}  overall {answer['overall_code']}  store {store.get('kind', '?')}"
    if "breaker" in store:
        head += f" (breaker {store['breaker']})"
    if not answer["domain_known"]:
        head += "  (no such domain in the config: nothing is limited)"
    lines = [head]
    if not backend["answered"]:
        lines.append(f"the store did not answer ({backend['error']}): on_backend_error answered "
                     f"({', '.join(backend['fallbacks']) or '-'})")
    if answer["global_shadowed"]:
        lines.append("global shadow mode: OVER_LIMIT is reported but not enforced")
    rows = [["DESCRIPTOR", "RULE", "LIMIT", "REMAINING", "RESET IN S", "STATE", "CODE"]]
    sources: list[str] = []
    for shown in answer["descriptors"]:
        rule = shown["rule"]
        if rule is None:
            rows.append([shown["descriptor"], "no rule (unlimited)", "-", "-", "-", "-", shown["code"]])
            continue
        name = rule["name"] or rule["stats_key"]
        if rule["source"]:
            sources.append(f"{name}: {rule['source']} ({rule['key_path']})")
        flags = [flag for flag, on in (("shadow mode", rule["shadow_mode"]),) if on]
        if not shown["limits"] or rule["unlimited"]:
            rows.append([shown["descriptor"], name, "unlimited" if rule["unlimited"] else "-", "-", "-",
                         shown["state"], shown["code"]])
            continue
        for limit in shown["limits"]:
            if limit.get("replaced"):
                rows.append([shown["descriptor"], name, limit["describe"], "-", "-", "replaced", shown["code"]])
                continue
            described = (f"{limit['name']}: " if limit["name"] and limit["name"] != rule["name"] else "") \
                + limit["describe"]
            state = "within" if limit["allowed"] else "OVER"
            if limit["answered_by"] != "store":
                state += f" ({limit['answered_by']})"
            rows.append([shown["descriptor"], name + (f" [{', '.join(flags)}]" if flags else ""), described,
                         str(limit["remaining"]), f"{limit['reset_after']:.1f}", state, shown["code"]])
    lines += ["", table(rows)]
    if sources:
        lines += ["", "rules:", *(f"  {source}" for source in dict.fromkeys(sources))]
    return "\n".join(lines) + "\n"


def run_inspect(args: argparse.Namespace) -> int:
    url = limits_url(args.admin, args.domain, args.descriptors)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            answer = dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            print(f"ratelimit-inspect: http://{args.admin} serves no /limits: start `pavilion ratelimit` with "
                  "--inspect (with --workers, also --redis and --config: see docs/ratelimit.md)", file=sys.stderr)
            return 1
        try:
            error = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            error = exc.reason
        print(f"ratelimit-inspect: the service refused the query ({exc.code}): {error}", file=sys.stderr)
        return 2
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"ratelimit-inspect: cannot read http://{args.admin}/limits: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    else:
        sys.stdout.write(render(answer))
    return 0
