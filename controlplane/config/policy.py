"""A route's `auth` and `rate_limits`, checked against what the whole config sets up: the tenants,
and whether `extauthz:` and `ratelimit:` sections exist anywhere in the directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from controlplane.config import model
from controlplane.config.rules import RATE_LIMIT_FACTS
from controlplane.config.shape import Fields, Got
from controlplane.config.token_rules import MAX_EXTENSION, claims_extension, scopes_extension
from pavilion.errors import Location
from pavilion.yaml_nodes import suggest
from ratelimit.rules import TOKEN_BUCKET

Problem = Callable[[str, Location, str], None]
T = TypeVar("T")

# The facts ext_authz finds in the token; they exist only on routes it checks.
TOKEN_FACTS = ("tenant", "client", "subject")


@dataclass
class Policy:
    """What routes may rely on: defined tenants, and where `extauthz:`/`ratelimit:` are (None: absent)."""

    tenants: dict[str, Location] = field(default_factory=dict)
    extauthz: Location | None = None
    ratelimit: Location | None = None


def route_auth(f: Fields, policy: Policy, problem: Problem) -> tuple[bool, model.RouteAuth | None]:
    """(ok, the route's auth): None when absent, RouteAuth(public=True) for `auth: none`."""
    if "auth" not in f:
        return "auth" not in f.given, None
    value = f.get("auth")
    if value == "none":
        return True, model.RouteAuth(public=True)
    auth: Fields = value
    token: bool = auth.get("token", True)
    certificates: tuple[model.ClientCertificate, ...] | None = distinct(
        auth.get("client_certificates", []), "client certificate", problem)
    if not token:
        # Each of these is something a token must hold: with no token asked for, it could never be checked.
        held = [name for name in ("tenants", "scopes", "claims", "identity") if name in auth.given]
        for name in held:
            what = "an identity assertion is made from" if name == "identity" else f"{name} are checked in"
            problem(f"{what} a token, and `token: false` asks for none: drop one or the other", auth.at(name),
                    auth.path_of(name))
        if held or not auth.complete or certificates is None:
            return False, None
        return True, model.RouteAuth(client_certificates=certificates, token=False)
    if policy.extauthz is None:
        hint = " (or, for the client certificate alone, `token: false`)" if "client_certificates" in auth.given else ""
        problem(f"auth needs ext_authz: add an `extauthz:` section naming its service{hint}", f.at("auth"),
                f.path_of("auth"))
        return False, None
    tenants = _tenants(auth.get("tenants", []), policy, problem)
    scopes: tuple[str, ...] | None = distinct(auth.get("scopes", []), "scope", problem)
    claims = _claims(auth, problem)
    if not auth.complete or tenants is None or scopes is None or claims is None or certificates is None:
        return False, None
    identity: Fields | None = auth.get("identity")
    built = model.RouteAuth(tenants, scopes, claims, client_certificates=certificates,
                            identity_audience=identity.get("audience") if identity is not None else None)
    return _fits_ext_authz(built, auth, problem), built


def _tenants(items: list[Got], policy: Policy, problem: Problem) -> tuple[str, ...] | None:
    ok = True
    seen: dict[str, Location] = {}
    for got in items:
        if got.value in seen:
            problem(f"tenant {got.value!r} is listed twice (first at {seen[got.value]})", got.loc, got.path)
            ok = False
        elif got.value not in policy.tenants:
            known = list(policy.tenants)
            listed = f"; known: {', '.join(known)}" if known and len(known) <= 8 else "; no tenant is defined"
            problem(f"unknown tenant {got.value!r}{suggest(got.value, known) or listed}", got.loc, got.path)
            ok = False
        seen.setdefault(got.value, got.loc)
    return tuple(got.value for got in items) if ok else None


def distinct(items: list[Got], what: str, problem: Problem) -> tuple[T, ...] | None:
    """The values of `items` in order, or None after reporting each one listed twice."""
    seen: dict[T, Location] = {}
    for got in items:
        if got.value in seen:
            problem(f"{what} {str(got.value)!r} is listed twice (first at {seen[got.value]})", got.loc, got.path)
        seen.setdefault(got.value, got.loc)
    return tuple(seen) if len(seen) == len(items) else None


def _claims(auth: Fields, problem: Problem) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    given: dict[str, Got] = auth.get("claims", {})
    if "claims" in auth and not given:
        problem("name at least one claim, or leave `claims` out", auth.at("claims"), auth.path_of("claims"))
        return None
    claims: list[tuple[str, tuple[str, ...] | None]] = [
        (name, distinct(got.value, "claim value", problem)) for name, got in given.items()]
    if any(values is None for _name, values in claims):
        return None
    return tuple((name, values) for name, values in claims if values is not None)


def _fits_ext_authz(auth: model.RouteAuth, fields: Fields, problem: Problem) -> bool:
    """ext_authz answers 503 to every request of a route whose extension is longer than it reads."""
    ok = True
    for name, text in (("scopes", scopes_extension(auth.scopes)), ("claims", claims_extension(auth.claims))):
        if len(text) > MAX_EXTENSION:
            problem(f"{name} come to {len(text)} characters for ext_authz, more than the {MAX_EXTENSION} it reads",
                    fields.at(name), fields.path_of(name))
            ok = False
    return ok


def route_rate_limits(f: Fields, auth: model.RouteAuth | None, policy: Policy,
                      problem: Problem) -> tuple[model.RouteRateLimit, ...] | None:
    """The route's rate limits, or None when any is wrong (every problem reported)."""
    if "rate_limits" not in f:
        return None if "rate_limits" in f.given else ()
    if policy.ratelimit is None:
        problem("rate_limits need a `ratelimit:` section naming the ratelimit service", f.at("rate_limits"),
                f.path_of("rate_limits"))
        return None
    # What makes the route tokenless, as written ("" when a token is asked for).
    public = "" if auth is None or auth.asks_token else "`auth: none`" if auth.public else "`token: false`"
    items: list[Got] = f.get("rate_limits")
    built = [_rate_limit(got.value, public, policy, problem) for got in items]
    if len(built) != len(items) or any(item is None for item in built):
        return None
    return tuple(item for item in built if item is not None)


def _rate_limit(r: Fields, public: str, policy: Policy, problem: Problem) -> model.RouteRateLimit | None:
    per = _per(r, public, policy, problem)
    algorithm = r.get("algorithm", "fixed_window")
    ok = per is not None
    if "burst" in r and algorithm != TOKEN_BUCKET:
        problem(f"burst applies to algorithm token_bucket only, not {algorithm}", r.at("burst"), r.path_of("burst"))
        ok = False
    if not ok or not r.complete or per is None:
        return None
    return model.RouteRateLimit(
        per=per, unit=r.get("unit"), requests=r.get("requests"), unit_multiplier=r.get("unit_multiplier", 1),
        algorithm=algorithm, burst=r.get("burst", 0), shadow_mode=r.get("shadow_mode", False),
        on_backend_error=r.get("on_backend_error", "allow"))


def _per(r: Fields, public: str, policy: Policy, problem: Problem) -> tuple[str, ...] | None:
    """The facts in their canonical order (the order of the descriptor entries)."""
    if "per" not in r:
        return None if "per" in r.given else ()
    value = r.get("per")
    got: list[Got] = [Got(value, r.at("per"), r.path_of("per"))] if isinstance(value, str) else value
    where, path = r.at("per"), r.path_of("per")
    facts: list[str] = []
    ok = True
    for item in got:
        if item.value in facts:
            problem(f"{item.value!r} is listed twice", item.loc, item.path)
            ok = False
        facts.append(item.value)
    token_facts = [fact for fact in facts if fact in TOKEN_FACTS]
    if token_facts and policy.extauthz is None:
        problem(f"per {token_facts[0]} needs ext_authz, which finds it in the token: add an `extauthz:` section",
                where, path)
        ok = False
    elif token_facts and public:
        problem(f"per {token_facts[0]} needs a token, but the route has {public}", where, path)
        ok = False
    # Subjects and client ids are each assigned by one issuer: counted without the tenant, two
    # tenants' alice (or two tenants' client "app") would share a counter.
    for fact, what in (("client", "a client id is unique only within its issuer"),
                       ("subject", "a subject is unique only within its tenant")):
        if fact in facts and "tenant" not in facts:
            problem(f"per {fact} needs tenant too: {what}", where, path)
            ok = False
    return tuple(fact for fact in RATE_LIMIT_FACTS if fact in facts) if ok else None


__all__ = ["Policy", "distinct", "route_auth", "route_rate_limits"]
