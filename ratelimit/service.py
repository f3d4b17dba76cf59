"""The gRPC servicer of `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.

Thin on purpose: request bytes in, a `RequestPlan`, `Limiter.decide`, protobuf out, metrics. It never raises
a gRPC error (envoyproxy/ratelimit does on a Redis error and leaves the outcome to Envoy's
`failure_mode_deny`): a Redis failure was already answered by each rule's `on_backend_error` in the
limiter; a malformed request (an override with an unknown unit) and anything unforeseen are logged
and answered OK, the same fail-open Envoy would choose, but decided and counted here.

The method takes the request as bytes (see `register`). Envoy sends the same bytes for every request
of one route and client, and everything up to the counters (rules, checks, the encoded Redis
command) follows from those bytes and the config, so plans are kept per request bytes: a repeated
request is neither parsed nor matched again. A config swap makes every kept plan stale at once.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.message import DecodeError

from pavilion.errors import BackendUnavailable
from pavilion.grpc_server import add_method_handlers
from pavilion.log import get_logger
from ratelimit.answer import Headers, PlanAnswer, plan_answer, rate_limit_headers, to_response
from ratelimit.limiter import Code, Decision, Descriptor, Limiter
from ratelimit.metrics import BACKEND_ERRORS, RuleMetrics
from ratelimit.rules import Limit

log = get_logger(__name__)

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name

_RESPONSE = rls_pb2.RateLimitResponse
_REQUEST = rls_pb2.RateLimitRequest
# Plans kept per request bytes. Descriptor values can come from clients (one per IP address, say), so
# this is bounded; the oldest plan goes first (re-planning costs a parse and a match, nothing more).
# A request larger than REQUEST_PLAN_MAX_BYTES (a descriptor made from a long header, say) is planned
# each time: the cache stays under ~20 MB whatever clients send.
REQUEST_PLANS = 10_000
REQUEST_PLAN_MAX_BYTES = 2048
# envoy.type.v3.RateLimitUnit (the override's) and RateLimitResponse.RateLimit.Unit, by our unit names.
_OVERRIDE_UNITS = {1: "second", 2: "minute", 3: "hour", 4: "day", 5: "month", 6: "year"}


class BadRequest(ValueError):
    """The request cannot be read; `reason` is a short code for the log and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def to_descriptors(request: rls_pb2.RateLimitRequest) -> list[Descriptor]:
    descriptors = []
    for index, proto in enumerate(request.descriptors):
        entries = tuple([(entry.key, entry.value) for entry in proto.entries])
        if not entries:
            raise BadRequest("empty_descriptor", f"descriptor {index} has no entries")
        override = None
        if proto.HasField("limit"):
            unit = _OVERRIDE_UNITS.get(proto.limit.unit)
            if unit is None:
                raise BadRequest("bad_override_unit", f"descriptor {index}: limit unit {proto.limit.unit}")
            override = Limit(unit=unit, requests_per_unit=proto.limit.requests_per_unit)
        hits = proto.hits_addend.value if proto.HasField("hits_addend") else None
        descriptors.append(Descriptor(entries, override, hits))
    return descriptors


def _cause(decision: Decision) -> str:
    if decision.backend_error is None:
        return "limits"
    fallbacks = {status.fallback for status in decision.statuses if status.fallback}
    return "backend_" + "_".join(sorted(fallbacks)) if fallbacks else "backend"


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, limiter: Limiter, metrics: RuleMetrics | None = None,
                 headers: Headers = rate_limit_headers) -> None:
        self.limiter = limiter
        self.metrics = metrics or RuleMetrics()
        self.headers = headers  # what each answer tells the client (answer.header_style)
        self._last_error_log = 0.0
        self._plans: dict[bytes, PlanAnswer] = {}  # by request bytes, oldest first

    async def ShouldRateLimit(self, request: bytes | rls_pb2.RateLimitRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> rls_pb2.RateLimitResponse:
        started = time.perf_counter()
        domain = ""
        try:
            answer = self._plans.get(request) if isinstance(request, bytes) else None
            if answer is None or answer.plan.config is not self.limiter.config:
                answer = self._plan(request)
            domain = answer.plan.domain
            decision = await self.limiter.decide(answer.plan)
            response = to_response(decision, answer, self.headers)
            self._record(domain, decision, answer)
            if decision.backend_error is not None:
                self._backend_error(decision.backend_error)
                cause = _cause(decision)
            else:
                cause = "limits"
            code = decision.code
        except BadRequest as exc:
            log.warning("ratelimit_bad_request", reason=exc.reason, detail=str(exc), domain=domain)
            response, cause, code = _RESPONSE(overall_code=int(Code.OK)), exc.reason, Code.OK
        except Exception:  # the servicer boundary: anything unforeseen is a decided, logged OK
            log.exception("ratelimit_internal_error", domain=domain)
            response, cause, code = _RESPONSE(overall_code=int(Code.OK)), "internal_error", Code.OK
        self.metrics.count_request(code.name, cause)
        self.metrics.observe_latency(time.perf_counter() - started)
        return response

    def _plan(self, request: bytes | rls_pb2.RateLimitRequest) -> PlanAnswer:
        """Parse and plan a request seen for the first time (or since the last config swap), and keep it
        with what its answers share."""
        if isinstance(request, bytes):
            try:
                message = _REQUEST.FromString(request)
            except DecodeError as exc:
                raise BadRequest("malformed_request", f"not a RateLimitRequest: {exc}") from exc
        else:
            message = request
        answer = plan_answer(self.limiter.plan(message.domain, to_descriptors(message), message.hits_addend or 1))
        if isinstance(request, bytes) and len(request) <= REQUEST_PLAN_MAX_BYTES:
            plans = self._plans
            if len(plans) >= REQUEST_PLANS:
                del plans[next(iter(plans))]
            plans[request] = answer
        return answer

    def _record(self, domain: str, decision: Decision, answer: PlanAnswer) -> None:
        record = self.metrics.record
        for status, views, label in zip(decision.statuses, answer.views, answer.labels, strict=True):
            if status.rule is None or not views or status.guessed:
                continue
            for limit_status, view in zip(status.limits, views, strict=True):
                outcome = limit_status.outcome
                over = not outcome.allowed
                record(domain, label, hits=status.hits, over=over, near=not over and outcome.used > view.near_above,
                       shadow=over and (status.shadowed or decision.global_shadowed))

    def _backend_error(self, error: BackendUnavailable) -> None:
        """Count every store failure; log one a second at most (an outage must not flood the log)."""
        kind = "breaker_open" if "breaker open" in error.detail else "timeout" if "timeout" in error.detail \
            else "error"
        BACKEND_ERRORS.labels(kind=kind).inc()
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            self._last_error_log = now
            log.warning("ratelimit_backend_unavailable", kind=kind, detail=str(error))


def register(service: RateLimitService) -> Any:
    """A `GrpcServer(register=...)` callback adding ShouldRateLimit, which takes the request as bytes."""

    def add(server: grpc.aio.Server) -> None:
        handlers = {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(
            service.ShouldRateLimit, request_deserializer=None,
            response_serializer=_RESPONSE.SerializeToString)}
        add_method_handlers(server, SERVICE_NAME, handlers)

    return add


__all__ = ["SERVICE_NAME", "BadRequest", "RateLimitService", "register", "to_descriptors", "to_response"]
