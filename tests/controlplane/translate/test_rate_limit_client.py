"""`per: client`: the Envoy action (ext_authz's `client` metadata, default "-"), the rule's key path
between tenant and subject, and a counter per client that tokens without one share."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from google.protobuf import text_format

from controlplane.config.model import Config, RouteRateLimit
from controlplane.translate import ratelimit_config, ratelimit_rules
from ratelimit.clock import ManualClock
from ratelimit.limiter import Code, Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from tests.controlplane.translate.test_policy import envoy_descriptor, protected, routes


def with_limits(*limits: RouteRateLimit) -> Config:
    config = protected()
    accounts = next(r for r in config.routes if r.name == "accounts")
    return replace(config, routes=(replace(accounts, rate_limits=limits),))


def metadata_action(key: str, default: str = "") -> str:
    text = (f'actions {{ metadata {{ descriptor_key: "{key}" metadata_key {{ key: "envoy.filters.http.ext_authz" '
            f'path {{ key: "{key}" }} }}')
    return text + (f' default_value: "{default}" }} }}' if default else " } }")


def test_client_action_sits_between_tenant_and_subject_with_default() -> None:
    config = with_limits(RouteRateLimit(("tenant", "client", "subject", "client_ip"), "minute", 5))
    limit = routes(config)["accounts"].route.rate_limits[0]
    assert text_format.MessageToString(limit, as_one_line=True) == " ".join((
        'actions { generic_key { descriptor_value: "accounts" descriptor_key: "route" } }',
        'actions { generic_key { descriptor_value: "0" descriptor_key: "limit" } }',
        metadata_action("tenant"),
        metadata_action("client", "-"),
        metadata_action("subject"),
        "actions { remote_address { } }",
    ))
    # Only client has a default: a missing tenant or subject still drops the descriptor.
    assert [a.metadata.default_value for a in limit.actions if a.HasField("metadata")] == ["", "-", ""]
    assert not any(a.metadata.skip_if_absent for a in limit.actions)


def test_rule_key_path_follows_the_facts_given() -> None:
    config = with_limits(
        RouteRateLimit(("tenant", "client", "subject", "client_ip"), "minute", 5),
        RouteRateLimit(("tenant", "client"), "minute", 5),
        RouteRateLimit(("tenant", "client", "client_ip"), "minute", 5),
    )
    assert [rule.key_path for rule in ratelimit_rules(config)] == [
        (("route", "accounts"), ("limit", "0"), ("tenant", None), ("client", None), ("subject", None),
         ("remote_address", None)),
        (("route", "accounts"), ("limit", "1"), ("tenant", None), ("client", None)),
        (("route", "accounts"), ("limit", "2"), ("tenant", None), ("client", None), ("remote_address", None)),
    ]
    # What Envoy sends for each finds its own rule, with or without a client in the token.
    lookup = ratelimit_config(config)
    for index, action in enumerate(routes(config)["accounts"].route.rate_limits):
        for metadata in ({"tenant": "acme", "client": "rp-1", "subject": "alice"}, {"tenant": "acme", "subject": "a"}):
            entries = envoy_descriptor(action, metadata, "10.0.0.1")
            assert entries is not None and ("client", metadata.get("client", "-")) in entries
            rule = lookup.match("pavilion", entries)
            assert rule is not None and rule.key_path[1] == ("limit", str(index))


def test_limiter_keeps_a_counter_per_client_and_one_for_tokens_without() -> None:
    config = with_limits(RouteRateLimit(("tenant", "client"), "minute", 2))
    action = routes(config)["accounts"].route.rate_limits[0]
    clock = ManualClock()
    limiter = Limiter(ratelimit_config(config), MemoryStore(clock), clock=clock)

    async def ask(tenant: str, client: str | None, subject: str) -> Code:
        metadata = {"tenant": tenant, "subject": subject} | ({"client": client} if client else {})
        entries = envoy_descriptor(action, metadata, "10.0.0.1")
        assert entries is not None
        return (await limiter.should_rate_limit("pavilion", [Descriptor(entries)])).code

    async def run() -> list[Code]:
        return [await ask(t, c, s) for t, c, s in (
            ("acme", "rp-a", "alice"), ("acme", "rp-a", "bob"),  # rp-a's 2, whoever the user
            ("acme", "rp-a", "carol"),                           # rp-a is over
            ("acme", "rp-b", "alice"),                           # rp-b counts apart
            ("beta", "rp-a", "alice"),                           # beta's rp-a is another client
            ("acme", None, "alice"), ("acme", None, "bob"),      # no client: counted, under "-"
            ("acme", None, "carol"),                             # and over together
        )]

    OK, OVER = Code.OK, Code.OVER_LIMIT
    assert asyncio.run(run()) == [OK, OK, OVER, OK, OK, OK, OK, OVER]
