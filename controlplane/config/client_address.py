"""`client_address:` of a listener: how Envoy finds the real client behind a load balancer
(controlplane/translate/_client_address.py makes the listener filter and the connection manager's fields).

Behind a cloud load balancer the TCP peer is the balancer. The client's address then arrives in one of
two ways, and the listener says which it trusts:

- `proxy_protocol`: an L4 balancer (AWS NLB, a Kubernetes Service of type LoadBalancer with the PROXY
  protocol on) writes a PROXY v1 or v2 header before the connection's first byte; Envoy's listener
  filter reads it and the connection's peer becomes the address it names.
- `trusted_hops` or `trusted_cidrs`: an L7 balancer (AWS ALB, GCP's HTTP(S) LB, Azure Application
  Gateway) appends the client to X-Forwarded-For. Only entries that trusted proxies appended count, so
  a client cannot name itself: `trusted_hops: N` takes the Nth entry from the right, `trusted_cidrs`
  the rightmost entry not in the networks, and only when the TCP peer is in them.

Both XFF forms at once are refused: Envoy refuses `xff_num_trusted_hops` beside an original IP
detection extension, and the two would disagree about which entry is the client anyway.
"""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.networks import network
from controlplane.config.policy import Problem, distinct
from controlplane.config.shape import Fields

__all__ = ["MAX_TRUSTED_HOPS", "PROXY_PROTOCOL_MODES", "read_client_address", "trusted_cidr"]

PROXY_PROTOCOL_MODES = ("required", "optional")
# A chain of CDN, balancer and an inner proxy is three; ten leaves room without reading deep into a
# header whose left end the client wrote.
MAX_TRUSTED_HOPS = 10


def trusted_cidr(text: str) -> str:
    """One `trusted_cidrs` entry: a network with its host bits zero (`10.0.0.0/8`), or one address."""
    found = network(text)
    if found.prefixlen == 0:
        raise ValueError(f"{text!r} trusts every address: any client could then name its own address in "
                         "X-Forwarded-For; list the load balancers' networks")
    return str(found)


def read_client_address(f: Fields, problem: Problem) -> tuple[bool, model.ClientAddress | None]:
    """(ok, the listener's client_address or None)."""
    if "client_address" not in f:
        return "client_address" not in f.given, None
    c: Fields = f.get("client_address")
    ok = True
    if "trusted_hops" in c.given and "trusted_cidrs" in c.given:
        problem("trusted_hops and trusted_cidrs do not go together (Envoy refuses xff_num_trusted_hops beside "
                "an original IP detection extension): give trusted_cidrs when the proxies' addresses are known, "
                "trusted_hops when only their number is", c.at("trusted_cidrs"), c.path_of("trusted_cidrs"))
        ok = False
    cidrs: tuple[str, ...] | None = distinct(c.get("trusted_cidrs", []), "network", problem)
    if cidrs is None or not ok or not c.complete:
        return False, None
    return True, model.ClientAddress(
        proxy_protocol=c.get("proxy_protocol"),
        trusted_hops=c.get("trusted_hops", 0),
        trusted_cidrs=cidrs,
        source=c.loc,
    )
