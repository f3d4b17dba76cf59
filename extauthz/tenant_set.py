"""The tenants in use: an immutable generation of `Tenant`s with their running key sets.

Where tenants come from (a YAML file today, the control plane later) is not this module's business:
`build_tenants` takes plain `Tenant`s. A new generation reuses the key set of every tenant that did not
change (same frozen value), so a reload does not refetch keys, and `retire` closes the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from extauthz.introspection import Introspector
from extauthz.keys import KeySet, key_set_for
from extauthz.tenant import Tenant

KeySetFactory = Callable[[Tenant], KeySet]
IntrospectorFactory = Callable[[Tenant, KeySet], Introspector]


class Tenants:
    """One generation: lookups by id and by issuer, and each tenant's key set."""

    def __init__(self, tenants: Iterable[Tenant], key_sets: dict[str, KeySet],
                 introspectors: dict[str, Introspector] | None = None) -> None:
        self.tenants = tuple(tenants)
        self._by_id = {tenant.id: tenant for tenant in self.tenants}
        self._by_issuer = {tenant.issuer: tenant for tenant in self.tenants}
        self._key_sets = key_sets
        self._introspectors = introspectors or {}
        # The tenants that introspect, in config order (who may be asked about an opaque token).
        self.introspecting = tuple(t for t in self.tenants if t.introspection is not None)
        # Before a tenant is known, a token is only parsed under the largest cap any tenant allows.
        self.max_token_bytes = max((t.max_token_bytes for t in self.tenants), default=8192)

    def get(self, tenant_id: str) -> Tenant | None:
        return self._by_id.get(tenant_id)

    def for_issuer(self, issuer: str) -> Tenant | None:
        return self._by_issuer.get(issuer)

    def keys(self, tenant: Tenant) -> KeySet:
        return self._key_sets[tenant.id]

    def introspector(self, tenant: Tenant) -> Introspector | None:
        return self._introspectors.get(tenant.id)

    def is_current(self, tenant: Tenant) -> bool:
        return self._by_id.get(tenant.id) is tenant

    def status(self) -> list[dict[str, Any]]:
        shown = []
        for tenant in self.tenants:
            status = self._key_sets[tenant.id].status()
            introspector = self._introspectors.get(tenant.id)
            if introspector is not None:
                status["introspection"] = introspector.status()
            shown.append(status)
        return shown


async def build_tenants(tenants: Iterable[Tenant], previous: Tenants | None = None,
                        factory: KeySetFactory = key_set_for,
                        introspector_factory: IntrospectorFactory = Introspector) -> Tenants:
    """A started generation. Raises ConfigError (from the factory) before starting anything new."""
    tenants = tuple(tenants)
    key_sets: dict[str, KeySet] = {}
    introspectors: dict[str, Introspector] = {}
    fresh: list[KeySet] = []
    reused: list[Tenant] = []
    for tenant in tenants:
        old = previous.get(tenant.id) if previous is not None else None
        if previous is not None and old == tenant and old is not None:
            key_sets[tenant.id] = previous.keys(old)
            introspector = previous.introspector(old)
            if introspector is not None:
                introspectors[tenant.id] = introspector
            reused.append(old)
        else:
            key_set = factory(tenant)
            key_sets[tenant.id] = key_set
            fresh.append(key_set)
            if tenant.introspection is not None:
                introspectors[tenant.id] = introspector_factory(tenant, key_set)
    # Unchanged tenants keep their very object, so cached verifications under them stay valid.
    kept = {t.id: t for t in reused}
    await asyncio.gather(*(key_set.start() for key_set in fresh))
    return Tenants((kept.get(t.id, t) for t in tenants), key_sets, introspectors)


async def retire(old: Tenants, new: Tenants | None) -> None:
    """Close the key sets and introspectors of `old` that `new` does not use."""
    in_use = set() if new is None else {id(new.keys(t)) for t in new.tenants}
    await asyncio.gather(*(old.keys(t).close() for t in old.tenants if id(old.keys(t)) not in in_use))
    kept = set() if new is None else {id(new.introspector(t)) for t in new.tenants}
    await asyncio.gather(*(introspector.close() for t in old.tenants
                           if (introspector := old.introspector(t)) is not None and id(introspector) not in kept))
