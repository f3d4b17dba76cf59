"""The gRPC servicer of `envoy.service.auth.v3.Authorization/Check`: protobuf in, `Outcome` out.

Thin on purpose: it reads the request facts, asks the `Authorizer`, and writes the CheckResponse.
Check never raises a gRPC error: anything unexpected is logged and answered 503 (deny), so Envoy's
`failure_mode_allow` never gets the chance to let a request through by accident.

The method is registered without a response serializer (gRPC then sends the bytes Check returns as
they are, with no Python call per answer): Check returns each answer serialized, a cached token's OK
answer is serialized once and then sent as those very bytes, and the common check (`check_now`) runs
without a nested coroutine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from extauthz import decision
from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from pavilion.grpc_server import add_method_handlers
from pavilion.log import get_logger
from pavilion.metrics import Counter

log = get_logger(__name__)

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

CHECKS = Counter("pavilion_extauthz_checks", "Check answers by HTTP status and reason", ["status", "reason"])

_MAX_MEMO = 50_000
FLUSH_SECONDS = 0.5
_ALLOWED = (200, "ok")  # the status and reason of every allowed outcome (decision.allowed)
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK_STATUS = status_pb2.Status(code=code_pb2.OK)
_DENIED_STATUS = {
    400: status_pb2.Status(code=code_pb2.INVALID_ARGUMENT),
    401: status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
    403: status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
    503: status_pb2.Status(code=code_pb2.UNAVAILABLE),
}


def to_response(outcome: Outcome) -> external_auth_pb2.CheckResponse:
    headers = [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)
               for key, value in outcome.headers]
    if outcome.allowed:
        metadata = struct_pb2.Struct()
        metadata.update({"tenant": outcome.tenant or "", "subject": outcome.subject or ""})
        if outcome.client is not None:
            metadata["client"] = outcome.client
        return external_auth_pb2.CheckResponse(
            status=_OK_STATUS, dynamic_metadata=metadata,
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=headers, headers_to_remove=list(outcome.headers_to_remove),
                response_headers_to_add=[
                    base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value),
                                               append_action=_OVERWRITE)
                    for key, value in outcome.response_headers]))
    # The reason code (a fixed word, never a token) as dynamic metadata: the edge's `error_responses` puts it
    # in a problem+json body's `detail`. Refusals are serialized per answer, off the cached OK path.
    reason = struct_pb2.Struct()
    reason["reason"] = outcome.reason
    return external_auth_pb2.CheckResponse(
        status=_DENIED_STATUS.get(outcome.status, _DENIED_STATUS[403]), dynamic_metadata=reason,
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=outcome.status), headers=headers, body=outcome.body))


def serialized(outcome: Outcome) -> bytes:
    data: bytes = to_response(outcome).SerializeToString()
    return data


class AuthorizationService:
    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        self._counters: dict[tuple[int, str], Any] = {}
        self._pending: dict[tuple[int, str], int] = {}
        self._allowed = 0  # allowed answers served from the memo since the last flush: all (200, "ok")
        self._flush_scheduled = False
        self._responses: dict[int, tuple[Outcome, bytes]] = {}

    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            attributes = request.attributes
            http = attributes.request.http
            outcome = self.authorizer.check_now(http.headers, http.path, attributes.context_extensions, attributes)
            if outcome is None:
                outcome = await self.authorizer.check(http.headers, http.path, attributes.context_extensions,
                                                      attributes)
        except Exception:  # the servicer boundary: an unforeseen error is a decided 503, never a gRPC error
            log.exception("check_failed")
            outcome = decision.unavailable("internal_error")
        if outcome.allowed:
            # A cached token returns its very same OK outcome: its answer is serialized once, and counted
            # with a plain integer.
            memo = self._responses.get(id(outcome))
            if memo is not None and memo[0] is outcome:
                self._allowed += 1
                if not self._flush_scheduled:
                    self._schedule_flush()
                return memo[1]
        self._count(outcome)
        if not outcome.allowed:
            log.info("check_denied", status=outcome.status, reason=outcome.reason)
            return serialized(outcome)
        response = serialized(outcome)
        if len(self._responses) >= _MAX_MEMO:
            self._responses.clear()
        self._responses[id(outcome)] = (outcome, response)
        return response

    def _count(self, outcome: Outcome) -> None:
        # Counted in a dict and added to Prometheus at most twice a second: a labelled inc() per
        # request (a lock, and an mmap write with --workers) is a noticeable share of a cached check.
        key = (outcome.status, outcome.reason)
        self._pending[key] = self._pending.get(key, 0) + 1
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush_counts)

    def flush_counts(self) -> None:
        pending, self._pending = self._pending, {}
        if self._allowed:
            pending[_ALLOWED] = pending.get(_ALLOWED, 0) + self._allowed
            self._allowed = 0
        self._flush_scheduled = False
        for (status, reason), count in pending.items():
            counter = self._counters.get((status, reason))
            if counter is None:
                counter = self._counters[(status, reason)] = CHECKS.labels(status=str(status), reason=reason)
            counter.inc(count)


def register(authorizer: Authorizer) -> Any:
    """A `GrpcServer(register=...)` callback adding the Authorization service."""

    def add(server: grpc.aio.Server) -> None:
        add_to_server(AuthorizationService(authorizer), server)

    return add


def add_to_server(servicer: AuthorizationService, server: grpc.aio.Server) -> None:
    """As the generated `add_AuthorizationServicer_to_server`, but Check returns bytes: no response serializer."""
    handlers = {"Check": grpc.unary_unary_rpc_method_handler(
        servicer.Check, request_deserializer=external_auth_pb2.CheckRequest.FromString, response_serializer=None)}
    add_method_handlers(server, SERVICE_NAME, handlers)
