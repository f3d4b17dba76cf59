"""Is a route's `fault` likely left in by mistake? A fault that aborts every request of a route for every
client (100 %, no `only_with_header`) takes the route down as surely as a broken service; a header gate
that ext_authz fills from a tenant's claim opens for every request of that tenant. Both load and are
served (a team may mean an outage drill), so `pavilion validate` and `pavilion plan` warn at the
fault's FILE:LINE:COL rather than refuse."""

from __future__ import annotations

from controlplane.config.mirroring import PER_MILLION
from controlplane.config.model import Config, Fault

__all__ = ["fault_warnings"]


def fault_warnings(config: Config) -> list[str]:
    claim_headers = {header: (tenant.id, claim) for tenant in config.tenants
                     for claim, header in tenant.claims_to_headers}
    lines: list[str] = []
    for route in config.routes:
        fault = route.fault
        if fault is None:
            continue
        if fault.aborts and fault.abort_per_million == PER_MILLION and fault.only_with_header is None:
            lines.append(f"{fault.source}: warning: route {route.name}'s fault aborts 100% of its requests "
                         f"({_answer(fault)}) and none reaches its service: left in by mistake? Gate it with "
                         "`only_with_header`, or lower `abort.percent`")
        if fault.only_with_header in claim_headers:
            tenant, claim = claim_headers[fault.only_with_header]
            lines.append(f"{fault.source}: warning: route {route.name}'s fault only_with_header "
                         f"{fault.only_with_header} is set by ext_authz from tenant {tenant}'s claim {claim}: every "
                         "request of that tenant would be faulted; name a header only your test clients send")
    return lines


def _answer(fault: Fault) -> str:
    return f"HTTP {fault.abort_status}" if fault.abort_status is not None else f"grpc-status {fault.abort_grpc_status}"
