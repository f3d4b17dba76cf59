"""Networks in the route YAML: the one reader of a CIDR, and `allow_networks` of listeners and routes.

Three fields hold networks: a listener's `client_address.trusted_cidrs` (the proxies trusted to write
X-Forwarded-For), a delegation's `networks` (where a team's endpoints may be) and `allow_networks` (the
clients a listener or route admits). They all read an entry with `network`: CIDR notation with the host
bits zero, IPv4 or IPv6, or a bare address for that one address (/32, /128).

`allow_networks` is enforced by Envoy's RBAC filter (controlplane/translate/_rbac.py) on the client
address Envoy detected, after `client_address`. A route on a listener with `allow_networks` must satisfy
both lists: a route's entry that overlaps none of its listener's networks could never admit anyone, and
is refused as the typo it most likely is.
"""

from __future__ import annotations

from ipaddress import ip_network

from controlplane.config.model import IPNetwork
from controlplane.config.policy import Problem, distinct
from controlplane.config.shape import Fields, Got

__all__ = ["IPNetwork", "network", "read_allow_networks", "within_listener"]


def network(text: str) -> IPNetwork:
    """A `Value` conversion: a network with its host bits zero (`10.0.0.0/8`, `2001:db8::/32`), or one
    address (`10.1.2.3` is 10.1.2.3/32, `2001:db8::1` is 2001:db8::1/128)."""
    try:
        return ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not a network like 10.0.0.0/8 or 2001:db8::/32, nor an address "
                             f"({exc})") from None
        address = text.partition("/")[0]
        raise ValueError(f"{text!r} has host bits set: write {str(loose)!r} for the network it lies in, or "
                         f"{address!r} alone for that one address") from None


def read_allow_networks(f: Fields, problem: Problem) -> tuple[bool, tuple[IPNetwork, ...]]:
    """(ok, the networks of `allow_networks` in order; empty when absent). The list's shape (at least one
    entry, each a network) is checked by the spec; here each network listed twice, as written or once
    normalised (`10.0.0.1` and `10.0.0.1/32`), is reported."""
    if "allow_networks" not in f:
        return "allow_networks" not in f.given, ()
    items: list[Got] = f.get("allow_networks")
    networks: tuple[IPNetwork, ...] | None = distinct(items, "network", problem)
    return networks is not None, networks or ()


def within_listener(f: Fields, route: tuple[IPNetwork, ...], listener: str, listener_networks: tuple[IPNetwork, ...],
                    problem: Problem) -> bool:
    """Whether each of a route's networks overlaps one of its listener's (when the listener has any): the
    route can narrow what its listener admits, never widen it, and a network outside all of them would
    refuse every client of its own."""
    if not listener_networks:
        return True
    ok = True
    allowed = ", ".join(str(n) for n in listener_networks)
    for got, value in zip(f.get("allow_networks", []), route, strict=False):
        if not any(value.overlaps(n) for n in listener_networks):
            problem(f"network {value} lies outside listener {listener!r}'s allow_networks ({allowed}): Envoy "
                    "admits a request only from both lists, so no client could reach this route from there",
                    got.loc, got.path)
            ok = False
    return ok
