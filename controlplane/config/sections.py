"""The top-level `tenants:`, `extauthz:` and `ratelimit:` of the merged directory, and `given_once`, how
every single top-level section (`access_log:`, `tracing:`, `rollout:`, `error_responses:`) is read.

Tenants merge like the other lists (ids and issuers unique across files); `extauthz:` and
`ratelimit:` are single sections that may appear in one file only. Both name a service that must
speak gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.config import model
from controlplane.config.build import Builder
from controlplane.config.policy import Policy
from controlplane.config.shape import Fields, Got
from extauthz.tenant import Tenant
from pavilion.errors import ConfigError, Location

__all__ = ["Sections", "check_services", "given_once", "read_sections"]


@dataclass
class Sections:
    tenants: list[Got]  # each value a Tenant
    extauthz: Fields | None
    ratelimit: Fields | None

    @property
    def policy(self) -> Policy:
        return Policy(
            tenants={got.value.id: got.loc for got in self.tenants},
            extauthz=self.extauthz.loc if self.extauthz is not None else None,
            ratelimit=self.ratelimit.loc if self.ratelimit is not None else None,
        )

    def model_tenants(self) -> tuple[Tenant, ...]:
        return tuple(got.value for got in self.tenants)

    def model_extauthz(self) -> model.ExtAuthzSettings | None:
        f = self.extauthz
        if f is None or not f.complete:
            return None
        return model.ExtAuthzSettings(f.get("service"), f.get("timeout", 0.25),
                                      f.get("identity_header", model.ExtAuthzSettings.identity_header))

    def model_ratelimit(self) -> model.RateLimitSettings | None:
        f = self.ratelimit
        if f is None or not f.complete:
            return None
        return model.RateLimitSettings(f.get("service"), f.get("domain", "pavilion"), f.get("timeout", 0.05),
                                       f.get("failure_mode_deny", False))


def read_sections(roots: list[Fields], errors: list[ConfigError]) -> Sections:
    tenants = _unique_tenants([got for root in roots for got in root.get("tenants", [])], errors)
    sections = Sections(tenants, _single(roots, "extauthz", errors), _single(roots, "ratelimit", errors))
    if tenants and sections.extauthz is None:
        errors.append(ConfigError("tenants take effect only through ext_authz: add an `extauthz:` section "
                                  "naming its service", location=tenants[0].loc, path="tenants"))
    return sections


def check_services(sections: Sections, services: list[Fields], builder: Builder) -> None:
    """`extauthz.service` and `ratelimit.service` name defined services that speak gRPC."""
    protocols = {f.get("name"): f.get("protocol", "http1") for f in services}
    for section, what in ((sections.extauthz, "ext_authz"), (sections.ratelimit, "ratelimit")):
        if section is None or "service" not in section:
            continue
        if not builder.refer(section, "service", builder.names.services, "service"):
            continue
        name = section.get("service")
        protocol = protocols.get(name, "http1")
        if protocol != "grpc":
            builder.problem(f"service {name!r} has protocol {protocol}; {what} is a gRPC service: "
                            "give it `protocol: grpc`", section.at("service"), section.path_of("service"))


def given_once(roots: list[Fields], key: str, errors: list[ConfigError]) -> Any:
    """The value of the top-level `key:` of the first file giving it (None when none does); every other file
    giving it is an error, naming the first place."""
    given = [root for root in roots if key in root.given]
    for other in given[1:]:
        errors.append(ConfigError(f"`{key}` is already given at {given[0].at(key)}; give it in one file only",
                                  location=other.at(key), path=key))
    return given[0].get(key) if given else None


def _single(roots: list[Fields], key: str, errors: list[ConfigError]) -> Fields | None:
    found: Fields | None = None
    for root in roots:
        f: Fields | None = root.get(key)
        if f is None:
            continue
        if found is not None:
            errors.append(ConfigError(f"`{key}` is already given at {found.loc}; give it in one file only",
                                      location=f.loc, path=key))
            continue
        found = f
    return found


def _unique_tenants(items: list[Got], errors: list[ConfigError]) -> list[Got]:
    ids: dict[str, Location] = {}
    issuers: dict[str, tuple[str, Location]] = {}
    kept: list[Got] = []
    for got in items:
        tenant: Tenant = got.value
        if tenant.id in ids:
            errors.append(ConfigError(f"tenant {tenant.id!r} is already defined at {ids[tenant.id]}",
                                      location=got.loc, path=f"{got.path}.id"))
            continue
        # One issuer, one tenant: the issuer is how ext_authz finds a token's tenant.
        if tenant.issuer in issuers:
            owner, where = issuers[tenant.issuer]
            errors.append(ConfigError(f"issuer {tenant.issuer!r} already belongs to tenant {owner!r} (at {where})",
                                      location=got.loc, path=f"{got.path}.issuer"))
            continue
        ids[tenant.id] = got.loc
        issuers[tenant.issuer] = (tenant.id, got.loc)
        kept.append(got)
    return kept
