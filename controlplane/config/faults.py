"""A route's `fault`: delays and aborts Envoy injects into a share of the route's requests (Envoy's fault
filter, as Istio's VirtualService `fault`), optionally only into requests carrying a header, so a team
can try its clients' timeouts and retries in production on its own requests.

The rules that look past one value live here: the route must call a service (a `redirect` or
`direct_response` has nothing to fault, refused through route_answers.FORWARD_ONLY), and a
`grpc_status` abort needs every service of the route to speak gRPC. A delay is whole milliseconds
(Envoy counts it so; less would be no delay) and shorter than the listener's stream idle timeout,
after which Envoy would end the idle stream with a 408 instead.
"""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.mirroring import percent_reader
from controlplane.config.policy import Problem
from controlplane.config.rules import rule_header_name
from controlplane.config.shape import Fields
from pavilion.durations import parse_duration

__all__ = ["GRPC_STATUSES", "MAX_FAULT_DELAY", "fault_delay", "fault_header_name", "read_fault",
           "read_fault_percent"]

# The HttpConnectionManager's stream_idle_timeout (translate/_listeners.py): a delayed request sends and
# receives nothing, so a delay this long would end in Envoy's 408, never in the request going on.
MAX_FAULT_DELAY = 300.0
GRPC_STATUSES = (1, 16)  # CANCELLED to UNAUTHENTICATED; 0 (OK) is no fault
# Headers every request carries once Envoy or ext_authz has seen it: a gate on one would open for everyone.
_ALWAYS_SET = ("x-request-id", "x-forwarded-for", "x-forwarded-proto", "authorization")

read_fault_percent = percent_reader("faulted requests")


def fault_delay(text: str) -> float:
    """A fault's delay: whole milliseconds, more than 0 and less than 300s."""
    seconds = parse_duration(text)
    millis = seconds * 1000
    if millis < 1:
        raise ValueError(f"{text!r} is shorter than 1ms; Envoy delays by whole milliseconds, so it would not delay")
    if abs(millis - round(millis)) > 1e-6:
        raise ValueError(f"{text!r} is not a whole number of milliseconds, which Envoy counts a delay in")
    if seconds >= MAX_FAULT_DELAY:
        raise ValueError(f"{text!r} is not shorter than 300s, the listener's stream idle timeout: Envoy would "
                         "answer the waiting request 408 instead of passing it on")
    return round(millis) / 1000


def fault_header_name(text: str) -> str:
    """`only_with_header`: a header a client chooses to send, which neither Envoy nor ext_authz sets."""
    if text.startswith(":") or text.lower() == "host":
        raise ValueError(f"{text!r} is on every request (a pseudo-header or the host), so the fault would hit "
                         "everyone; name a header only your test clients send, like x-chaos-test")
    name = rule_header_name(text)
    if name.startswith("x-envoy-"):
        raise ValueError(f"{name!r} is one of Envoy's own headers (Envoy removes several from clients' requests); "
                         "name one of yours, like x-chaos-test")
    if name.startswith("x-pavilion-") or name in _ALWAYS_SET:
        raise ValueError(f"{name!r} is on every request Envoy passes on (Envoy or ext_authz sets it), so the "
                         "fault would hit everyone; name a header only your test clients send, like x-chaos-test")
    return name


def read_fault(f: Fields, answer: str | None, backends: tuple[model.Backend, ...] | None,
               service_fields: dict[str, Fields], problem: Problem) -> tuple[bool, model.Fault | None]:
    """(ok, the route's fault or None). `answer`: the route's `redirect` or `direct_response`, refused
    with the other forward-only fields (route_answers.FORWARD_ONLY)."""
    if "fault" not in f:
        return "fault" not in f.given, None
    fault: Fields = f.get("fault")
    if answer is not None or not fault.complete:
        return False, None
    delay: Fields | None = fault.get("delay")
    abort: Fields | None = fault.get("abort")
    if abort is not None and "grpc_status" in abort:
        for backend in backends or ():
            service = service_fields.get(backend.service)
            protocol = service.get("protocol", "http1") if service is not None else "http1"
            if protocol != "grpc":
                problem(f"service {backend.service!r} speaks {protocol}, not gRPC: its clients read no grpc-status; "
                        "abort it with `status`", abort.at("grpc_status"), abort.path_of("grpc_status"))
                return False, None
    return True, model.Fault(
        delay=delay.get("duration") if delay is not None else None,
        delay_per_million=delay.get("percent") if delay is not None else 0,
        abort_status=abort.get("status") if abort is not None else None,
        abort_grpc_status=abort.get("grpc_status") if abort is not None else None,
        abort_per_million=abort.get("percent") if abort is not None else 0,
        only_with_header=fault.get("only_with_header"),
        source=f.at("fault"),
    )
