"""A representative config for translation tests: two regions, two listeners, every route feature."""

from __future__ import annotations

from typing import TypeVar, cast

from google.protobuf.message import Message

from controlplane.config.model import (
    Backend,
    CircuitBreaker,
    Config,
    Endpoint,
    HeaderMatch,
    HeaderRules,
    HealthCheck,
    Listener,
    Match,
    OutlierDetection,
    Retries,
    Route,
    Service,
)
from controlplane.translate import translate
from pavilion.errors import Location

M = TypeVar("M", bound=Message)

REGIONS = ("eu-west", "us-east")


def sample_config() -> Config:
    accounts = Service(
        name="accounts",
        endpoints=(
            Endpoint("127.0.0.1", 9001, "eu-west"),
            Endpoint("127.0.0.1", 9003, "eu-west", weight=3),
            Endpoint("127.0.0.1", 9002, "us-east"),
        ),
        health_check=HealthCheck(path="/healthz", interval=1.0, timeout=0.5),
        circuit_breaker=CircuitBreaker(max_connections=1000, max_pending_requests=100, max_requests=1000),
        outlier_detection=OutlierDetection(consecutive_5xx=3, interval=1.0, base_ejection_time=10.0),
        connect_timeout=0.25,
        source=Location("teams/accounts.yaml", 8, 5),
    )
    billing = Service(
        name="billing",
        endpoints=(Endpoint("127.0.0.1", 9101, "us-east"), Endpoint("127.0.0.1", 9102, "ap-south")),
        source=Location("teams/billing.yaml", 3, 5),
    )
    billing_v2 = Service(
        name="billing-v2",
        endpoints=(Endpoint("127.0.0.1", 9201, "eu-west"),),
        source=Location("teams/billing.yaml", 9, 5),
    )
    routes = (
        Route(
            name="accounts", listener="public", match=Match(prefix="/v1/accounts"),
            backends=(Backend("accounts"),), rewrite_prefix="/accounts", timeout=2.0,
            retries=Retries(attempts=3, on=("5xx", "reset", "connect-failure"), backoff_base=0.025,
                            backoff_max=0.25, per_try_timeout=0.5),
            request_headers=HeaderRules(add=(("x-from", "gateway"),), remove=("x-debug",)),
            response_headers=HeaderRules(add=(("strict-transport-security", "max-age=63072000"),)),
            source=Location("teams/accounts.yaml", 20, 5),
        ),
        Route(
            name="accounts-admin", listener="public",
            match=Match(prefix="/v1/accounts", headers=(HeaderMatch("x-admin", "yes"),), methods=("POST", "DELETE")),
            backends=(Backend("accounts"),), source=Location("teams/accounts.yaml", 32, 5),
        ),
        Route(
            name="billing", listener="public", hosts=("billing.example.com", "*.billing.example.com"),
            match=Match(prefix="/"), backends=(Backend("billing", 80), Backend("billing-v2", 20)),
            source=Location("teams/billing.yaml", 15, 5),
        ),
        Route(
            name="invoice", listener="public", hosts=("billing.example.com",),
            match=Match(regex=r"/invoices/[0-9]+"), backends=(Backend("billing"),),
            source=Location("teams/billing.yaml", 22, 5),
        ),
        Route(
            name="status", listener="internal", match=Match(path="/status", methods=("GET",)),
            backends=(Backend("accounts"),), source=Location("teams/ops.yaml", 2, 5),
        ),
    )
    return Config(
        regions=REGIONS,
        listeners=(
            Listener("public", "127.0.0.1", 10080, source=Location("gateway.yaml", 2, 5)),
            Listener("internal", "127.0.0.1", 10081, source=Location("gateway.yaml", 3, 5)),
        ),
        services=(accounts, billing, billing_v2),
        routes=routes,
    )


def translated(kind: type[M], config: Config, region: str, role: str = "edge") -> list[M]:
    """translate()'s resources of one type, typed: the type URL is derived from `kind`."""
    found = translate(config, region, role)[f"type.googleapis.com/{kind.DESCRIPTOR.full_name}"]
    if not all(isinstance(m, kind) for m in found):
        raise TypeError(f"translate returned something other than {kind.__name__}")
    return cast(list[M], found)
