"""ADS in State of the World: `AggregatedDiscoveryService/StreamAggregatedResources`.

Stream I/O only: what to send comes from the cache's snapshot for the stream's node group, what was
sent and acked lives in `StreamState`, and the push order is `base.AdsStream`'s. The rules
(docs/root/api-docs/xds_protocol.rst):
- nonces are per stream; a request echoing an older nonce is stale and ignored;
- a request echoing the latest nonce is an ACK, or a NACK when it carries `error_detail`; neither is
  answered, and a NACKed version is never sent again: only a new version is;
- a first request for a type is served whatever version or nonce it carries (it may come from
  another replica);
- LDS and CDS responses carry the full state; EDS and RDS carry the names asked for, and a name
  newly asked for is sent even when its version did not change;
- CDS being full state, a removed cluster that routes may still name is sent (under a transitional
  version) until this stream acked the listeners and routes of the change.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from controlplane import resources as urls
from controlplane.server.base import AdsStream, lingering_version
from controlplane.server.stream import TypeState
from controlplane.snapshot import response_head


class SotwStream(AdsStream):
    async def on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        type_state = self.state.type(request.type_url)
        if type_state.sent_nonce and request.response_nonce:
            if request.response_nonce != type_state.sent_nonce:
                return  # stale: an answer to a response we have since replaced
            if request.HasField("error_detail"):
                self.record_nack(type_state, request.error_detail.message, request.version_info)
            else:
                self.record_ack(type_state)
        added = type_state.subscribe(list(request.resource_names),
                                     legacy_wildcard_allowed=request.type_url in urls.FULL_STATE_TYPES)
        snap = self.snapshot.types.get(request.type_url) if self.snapshot else None
        if snap is not None and any(name in snap.resources for name in added - type_state.sent_names):
            type_state.resend = True  # a newly subscribed name is sent even if its version did not change

    def due(self, type_state: TypeState) -> bool:
        if self.snapshot is None:
            return False
        if type_state.resend or not type_state.sent_nonce:
            return True
        target = self.snapshot.type(type_state.type_url).version
        if type_state.lingering and type_state.sent_target == target:
            return not self.routes_behind()  # drop the removed clusters once no route names them
        return type_state.sent_target != target

    async def send(self, type_state: TypeState) -> None:
        if self.snapshot is None:
            return
        snap = self.snapshot.type(type_state.type_url)
        chosen = list(snap.resources.values()) if type_state.wildcard else snap.select(type_state.names)
        body = snap.response_fields if type_state.wildcard else b"".join(r.response_field for r in chosen)
        lingering = {}
        if type_state.type_url == urls.CLUSTER and type_state.sent_nonce:
            self.refresh_endpoints_of({r.name for r in chosen if type_state.sent_hashes().get(r.name) != r.hash})
            lingering = self.lingering_clusters(type_state)
        if lingering:
            chosen = sorted([*chosen, *lingering.values()], key=lambda r: r.name)
            body = b"".join(r.response_field for r in chosen)
        version = lingering_version(snap.version, lingering)
        nonce = self.state.next_nonce()
        response = response_head(type_url=type_state.type_url, version=version, nonce=nonce,
                                 identifier=self.server.identifier) + body
        await self.context.write(response)
        type_state.refresh.clear()
        self.record_sent(type_state, version=version, target=snap.version, nonce=nonce,
                         held={r.name: r for r in chosen}, lingering=frozenset(lingering),
                         size=len(response), count=len(chosen))
