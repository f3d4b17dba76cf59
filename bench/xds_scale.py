"""xDS at scale: many simulated ADS clients on one control plane, and what a one-route change sends.

Part 1: N scripted ADS clients (grpc.aio, in this one process, one HTTP/2 connection each, half in
eu-west and half in us-east) subscribe like Envoy (CDS and LDS wildcard, EDS and RDS by name, on
Delta also VHDS wildcard) and ack every response. Measured: control-plane RSS before and after they
synced (per client), and the time from a route file write to every client having acked the new
routes; the baseline is the same edit with 1 client, in the same run.
Part 2: a config of `--big` routes; one SotW and one Delta client; one route's prefix is edited,
then one service's endpoint, and the bytes each client receives for each change are counted per type.
Twice: every route on the default host `*` (one virtual host), and the routes spread over `--hosts`
hosts (a virtual host each, so Delta sends the edited route's virtual host alone).

    .venv/bin/python -m bench.xds_scale [--clients 1000] [--routes 100] [--fleet-hosts 0] [--big 10000]
                                        [--hosts 10000] [--delta]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.xds_reload import ROUTES_PER_FILE, get_json, route_file, rss_mib, write_config
from controlplane import resources as urls
from tests.procs import PAVILION, Proc, free_port

SUBSCRIPTIONS = ((urls.CLUSTER, False), (urls.ENDPOINT, True), (urls.LISTENER, False), (urls.ROUTE, True))
DELTA_SUBSCRIPTIONS = (*SUBSCRIPTIONS, (urls.VIRTUAL_HOST, False))  # Envoy opens VHDS with no names


@dataclass
class Client:
    index: int
    region: str
    services: list[str]
    delta: bool
    acked: dict[str, str] = field(default_factory=dict)  # type URL -> last acked version
    acked_at: dict[str, float] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)  # type URL -> bytes since the last reset

    @property
    def subscriptions(self) -> tuple[tuple[str, bool], ...]:
        return DELTA_SUBSCRIPTIONS if self.delta else SUBSCRIPTIONS

    @property
    def routes_type(self) -> str:
        """The type a route edit reaches this client by: whole tables (SotW), virtual hosts (Delta)."""
        return urls.VIRTUAL_HOST if self.delta else urls.ROUTE

    def synced(self) -> bool:
        return len(self.acked) == len(self.subscriptions)

    def names(self, type_url: str, explicit: bool) -> list[str]:
        if not explicit:
            return []
        return self.services if type_url == urls.ENDPOINT else ["public"]

    def node_request(self, request: Any) -> None:
        request.node.id = f"sim-{self.index}"
        request.node.locality.region = self.region

    async def run(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        if self.delta:
            await self._run_delta(stub.DeltaAggregatedResources())
        else:
            await self._run_sotw(stub.StreamAggregatedResources())

    async def _run_sotw(self, call: Any) -> None:
        for number, (type_url, explicit) in enumerate(SUBSCRIPTIONS):
            request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=self.names(type_url, explicit))
            if number == 0:
                self.node_request(request)
            await call.write(request)
        explicit_of = dict(SUBSCRIPTIONS)
        async for response in call:
            self.received[response.type_url] += response.ByteSize()
            await call.write(discovery_pb2.DiscoveryRequest(
                type_url=response.type_url, version_info=response.version_info, response_nonce=response.nonce,
                resource_names=self.names(response.type_url, explicit_of[response.type_url])))
            self.acked[response.type_url] = response.version_info
            self.acked_at[response.type_url] = time.perf_counter()

    async def _run_delta(self, call: Any) -> None:
        for number, (type_url, explicit) in enumerate(DELTA_SUBSCRIPTIONS):
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=self.names(type_url, explicit))
            if number == 0:
                self.node_request(request)
            await call.write(request)
        async for response in call:
            self.received[response.type_url] += response.ByteSize()
            await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url,
                                                                 response_nonce=response.nonce))
            self.acked[response.type_url] = response.system_version_info
            self.acked_at[response.type_url] = time.perf_counter()


def start_plane(directory: Path) -> tuple[Proc, int, int]:
    xds, admin = free_port(), free_port()
    plane = Proc([PAVILION, "--log-level", "warning", "controlplane", "--config", str(directory),
                  "--xds-port", str(xds), "--admin-port", str(admin)], name="controlplane")
    try:
        plane.wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=120)
    except BaseException:
        plane.stop()
        raise
    return plane, xds, admin


def served_versions(admin: int, kind: str = "RouteConfiguration") -> set[str]:
    status = get_json(f"http://127.0.0.1:{admin}/status")
    return {group["types"][kind] for group in status["groups"].values()}


async def wait_until(condition: Any, limit: float, what: str) -> None:
    deadline = time.perf_counter() + limit
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def edit_and_wait(admin: int, files: list[Path], routes: int, clients: list[Client], attempt: int,
                        hosts: int = 0) -> float:
    """Seconds from a one-route edit to every client having acked its new routes."""
    content = route_file(0, min(routes, ROUTES_PER_FILE), max(10, routes // 50), first_prefix=f"/changed-{attempt}",
                         hosts=hosts)
    return await write_and_wait(admin, files[0], content, clients, lambda client: client.routes_type)


async def write_and_wait(admin: int, path: Path, content: str, clients: list[Client],
                         type_of: Any = lambda client: urls.ENDPOINT) -> float:
    """Seconds from writing `content` to every client having acked a new version of its `type_of(client)`."""
    types = {type_of(client) for client in clients}
    before = {type_url: served_versions(admin, type_url.rsplit(".", 1)[-1]) for type_url in types}
    for client in clients:
        client.received.clear()
    mark = time.perf_counter()
    await asyncio.to_thread(path.write_text, content)
    await wait_until(lambda: all(c.acked.get(type_of(c)) not in before[type_of(c)] and c.acked.get(type_of(c))
                                 for c in clients), 120, "clients acked the change")
    return max(c.acked_at[type_of(c)] for c in clients) - mark


async def with_clients(xds: int, count: int, services: list[str], delta: bool) -> tuple[list[Client], list[Any]]:
    clients = [Client(i, ("eu-west", "us-east")[i % 2], services, delta) for i in range(count)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{xds}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in clients]
    tasks = [asyncio.create_task(client.run(channel)) for client, channel in zip(clients, channels, strict=True)]
    return clients, [channels, tasks]


async def close(handles: list[Any]) -> None:
    channels, tasks = handles
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()


async def fleet(count: int, routes: int, delta: bool, hosts: int = 0) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    files = write_config(directory, routes, free_port(), free_port(), hosts)
    services = [f"svc-{i}" for i in range(max(10, routes // 50))]
    plane, xds, admin = start_plane(directory)
    try:
        idle = rss_mib(plane.popen.pid)
        one, handles = await with_clients(xds, 1, services, delta)
        await wait_until(one[0].synced, 60, "one client synced")
        baseline = min([await edit_and_wait(admin, files, routes, one, attempt, hosts) for attempt in range(2)])
        await close(handles)
        started = time.perf_counter()
        clients, handles = await with_clients(xds, count, services, delta)
        await wait_until(lambda: all(c.synced() for c in clients), 300, "all clients synced")
        synced = time.perf_counter() - started
        await asyncio.sleep(1.0)
        rss = rss_mib(plane.popen.pid)
        changes = [await edit_and_wait(admin, files, routes, clients, 10 + attempt, hosts) for attempt in range(2)]
        await close(handles)
        return {"idle": idle, "rss": rss, "synced": synced, "baseline": baseline, "change": min(changes),
                "change_max": max(changes)}
    finally:
        plane.stop()


async def change_bytes(routes: int, hosts: int = 0) -> dict[str, dict[str, Counter[str]]]:
    """Bytes one SotW and one Delta client receive for a one-route change and a one-endpoint change."""
    directory = Path(tempfile.mkdtemp(prefix="bench-bytes-"))
    eu_port = free_port()
    files = write_config(directory, routes, free_port(), eu_port, hosts)  # us-east endpoints are on eu_port + 1
    services = [f"svc-{i}" for i in range(max(10, routes // 50))]
    plane, xds, admin = start_plane(directory)
    try:
        sotw, sotw_handles = await with_clients(xds, 1, services, delta=False)
        delta, delta_handles = await with_clients(xds, 1, services, delta=True)
        everyone = [sotw[0], delta[0]]
        await wait_until(lambda: all(c.synced() for c in everyone), 120, "synced")
        result: dict[str, dict[str, Counter[str]]] = {}
        await edit_and_wait(admin, files, routes, everyone, 1, hosts)
        await asyncio.sleep(1.0)  # anything else the change sends
        result["one route"] = {"sotw": Counter(sotw[0].received), "delta": Counter(delta[0].received)}
        services_file = directory / "services.yaml"
        text = services_file.read_text()
        moved = text.replace(f"127.0.0.1:{eu_port}, region: eu-west", f"127.0.0.2:{eu_port}, region: eu-west", 1)
        await write_and_wait(admin, services_file, moved, everyone)
        await asyncio.sleep(1.0)
        result["one endpoint"] = {"sotw": Counter(sotw[0].received), "delta": Counter(delta[0].received)}
        await close(sotw_handles)
        await close(delta_handles)
        return result
    finally:
        plane.stop()


def freeze_cost(routes: int, hosts: int) -> dict[str, float]:
    """Milliseconds, in this process, to translate the config and freeze its snapshot (best of 3), and the
    part of freezing spent deriving the virtual hosts Delta streams get."""
    from controlplane.config.load import load_config
    from controlplane.snapshot import build_snapshot, with_virtual_hosts
    from controlplane.translate import translate

    directory = Path(tempfile.mkdtemp(prefix="bench-freeze-"))
    write_config(directory, routes, 10080, 9000, hosts)
    config = load_config(directory)

    def best(call: Any) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times) * 1000

    resources = translate(config, "eu-west")
    tables = build_snapshot(resources).type(urls.ROUTE)
    return {"translate": best(lambda: translate(config, "eu-west")), "freeze": best(lambda: build_snapshot(resources)),
            "virtual hosts": best(lambda: with_virtual_hosts(tables))}


def short(type_url: str) -> str:
    return {urls.CLUSTER: "CDS", urls.ENDPOINT: "EDS", urls.LISTENER: "LDS", urls.ROUTE: "RDS",
            urls.VIRTUAL_HOST: "VHDS"}[type_url]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=100, help="routes in the config the clients get")
    parser.add_argument("--big", type=int, default=10000, help="routes for the one-route-change byte count")
    parser.add_argument("--hosts", type=int, default=10000, help="hosts the --big routes are spread over, second run")
    parser.add_argument("--delta", action="store_true", help="the fleet speaks Delta instead of SotW")
    parser.add_argument("--fleet-hosts", type=int, default=0,
                        help="hosts the fleet's routes are spread over (0: all on *, one virtual host)")
    args = parser.parse_args(argv)
    kind = "Delta" if args.delta else "SotW"
    spread = f" on {args.fleet_hosts} hosts" if args.fleet_hosts else ""
    print(f"{args.clients} simulated {kind} ADS clients (this process, one connection each), "
          f"{args.routes} routes{spread}")
    row = asyncio.run(fleet(args.clients, args.routes, args.delta, args.fleet_hosts))
    per_client = (row["rss"] - row["idle"]) * 1024 / args.clients
    print(f"  all synced after         {row['synced']:.2f} s")
    print(f"  control plane RSS        {row['idle']:.0f} MiB idle -> {row['rss']:.0f} MiB with clients "
          f"({per_client:.0f} KiB per client)")
    print(f"  one-route change acked   1 client: {row['baseline'] * 1000:.0f} ms (baseline); "
          f"{args.clients} clients: {row['change'] * 1000:.0f} ms (worst of 2: {row['change_max'] * 1000:.0f} ms),"
          f" {row['change'] / row['baseline']:.1f}x")
    for hosts in (0, args.hosts):
        spread = f"on {hosts} hosts (a virtual host each)" if hosts else "all on host * (one virtual host)"
        print(f"\nbytes one client receives per change at {args.big} routes {spread}, {max(10, args.big // 50)}"
              " services, one listener (so one RouteConfiguration)")
        for change, sent in asyncio.run(change_bytes(args.big, hosts)).items():
            for name in ("sotw", "delta"):
                parts = ", ".join(f"{short(url)} {size:,}" for url, size in sorted(sent[name].items()))
                print(f"  {change:>12} {name:>5}: {sum(sent[name].values()):>10,} B  ({parts or 'nothing'})")
            ratio = sum(sent["sotw"].values()) / max(1, sum(sent["delta"].values()))
            print(f"  {change:>12} SotW / Delta: {ratio:.2f}x")
        cost = freeze_cost(args.big, hosts)
        print(f"  per config change (in process, best of 3): translate {cost['translate']:.0f} ms, freeze the "
              f"snapshot {cost['freeze']:.0f} ms, of which the virtual hosts {cost['virtual hosts']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
