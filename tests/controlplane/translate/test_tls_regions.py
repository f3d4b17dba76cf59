"""Certificates per region: every node asks for `<listener>/certificate` and gets its region's content;
the Listener stays one resource shared by every region. Client certificate details to upstreams: the HTTP
connection manager's XFCC mode is SANITIZE_SET with the chosen elements, else Envoy's SANITIZE."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache, config_version
from controlplane.config.model import Config, ListenerTls, RegionCertificate
from controlplane.translate import translate, translate_regional
from tests.controlplane.translate.sample import sample_config, translated

DEFAULT = (b"-----BEGIN CERTIFICATE-----\ndefault\n-----END CERTIFICATE-----\n", b"default-key")
EU = RegionCertificate("eu-west", b"-----BEGIN CERTIFICATE-----\neu\n-----END CERTIFICATE-----\n", b"eu-key")
US = RegionCertificate("us-east", b"-----BEGIN CERTIFICATE-----\nus\n-----END CERTIFICATE-----\n", b"us-key")
CA = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"
_HCM = hcm_pb2.HttpConnectionManager


def with_public_tls(tls: ListenerTls) -> Config:
    config = sample_config()
    return replace(config, listeners=tuple(replace(item, tls=tls) if item.name == "public" else item
                                           for item in config.listeners))


def served_certificate(config: Config, region: str) -> tuple[bytes, bytes]:
    (secret,) = [s for s in translated(secret_pb2.Secret, config, region) if s.name == "public/certificate"]
    return bytes(secret.tls_certificate.certificate_chain.inline_bytes), bytes(
        secret.tls_certificate.private_key.inline_bytes)


def test_each_region_gets_its_own_certificate_under_the_same_name() -> None:
    config = with_public_tls(ListenerTls(*DEFAULT, regions=(EU, US)))
    assert served_certificate(config, "eu-west") == (EU.certificate_chain, EU.private_key)
    assert served_certificate(config, "us-east") == (US.certificate_chain, US.private_key)
    assert served_certificate(config, "ap-south") == DEFAULT  # a region without an entry: the default
    # The Listener names the one secret, and is the same bytes in every region.
    listeners = {region: [m.SerializeToString(deterministic=True) for m in translated(listener_pb2.Listener, config,
                                                                                       region)]
                 for region in ("eu-west", "us-east", "ap-south")}
    assert listeners["eu-west"] == listeners["us-east"] == listeners["ap-south"]


def test_regions_alone_serve_a_node_of_another_region_the_first_entry() -> None:
    config = with_public_tls(ListenerTls(b"", b"", regions=(EU, US)))
    assert served_certificate(config, "us-east") == (US.certificate_chain, US.private_key)
    assert served_certificate(config, "") == (EU.certificate_chain, EU.private_key)


def test_the_regional_part_carries_the_secrets_only_when_a_listener_has_regions() -> None:
    plain = with_public_tls(ListenerTls(*DEFAULT))
    assert set(translate_regional(plain, "eu-west")) == {urls.ENDPOINT}
    regional = with_public_tls(ListenerTls(*DEFAULT, CA, regions=(EU,)))
    part = translate_regional(regional, "eu-west")
    assert set(part) == {urls.ENDPOINT, urls.SECRET}
    assert part[urls.SECRET] == translate(regional, "eu-west")[urls.SECRET]  # the same full list, client CA included


async def test_the_cache_shares_the_listeners_and_serves_each_region_its_secret() -> None:
    config = with_public_tls(ListenerTls(*DEFAULT, regions=(EU, US)))
    cache = SnapshotCache(translate, regional=translate_regional)
    await cache.install(config, config_version(config))
    eu = await cache.snapshot(Group("eu-west", "edge"))
    us = await cache.snapshot(Group("us-east", "edge"))  # built from eu-west's, sharing what is not regional
    assert us.types[urls.LISTENER] is eu.types[urls.LISTENER]
    certificate = "public/certificate"
    for snapshot, entry in ((eu, EU), (us, US)):
        message = snapshot.types[urls.SECRET].resources[certificate].message
        assert isinstance(message, secret_pb2.Secret)
        assert message.tls_certificate.certificate_chain.inline_bytes == entry.certificate_chain
    assert eu.types[urls.SECRET].version != us.types[urls.SECRET].version

    # A rotation of us-east's files changes us-east's secret only.
    rotated = with_public_tls(ListenerTls(*DEFAULT, regions=(EU, replace(US, certificate_chain=b"us-2"))))
    await cache.install(rotated, config_version(rotated))
    eu_after, us_after = cache.current(Group("eu-west", "edge")), cache.current(Group("us-east", "edge"))
    assert eu_after is not None and us_after is not None
    assert eu_after.types[urls.SECRET].version == eu.types[urls.SECRET].version
    assert us_after.types[urls.SECRET].version != us.types[urls.SECRET].version
    assert eu_after.types[urls.LISTENER].version == eu.types[urls.LISTENER].version


def connection_manager(config: Config, name: str = "public") -> hcm_pb2.HttpConnectionManager:
    (found,) = [m for m in translated(listener_pb2.Listener, config, "eu-west") if m.name == name]
    manager = _HCM()
    assert found.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_forwarded_client_certificate_elements_become_sanitize_set() -> None:
    config = with_public_tls(ListenerTls(*DEFAULT, CA, forward_client_certificate=("uri", "hash", "subject")))
    manager = connection_manager(config)
    assert manager.forward_client_cert_details == _HCM.SANITIZE_SET
    details = manager.set_current_client_cert_details
    assert details.uri and details.subject.value
    assert not (details.dns or details.cert or details.chain)

    every = with_public_tls(ListenerTls(*DEFAULT, CA, forward_client_certificate=("dns", "cert", "chain")))
    details = connection_manager(every).set_current_client_cert_details
    assert details.dns and details.cert and details.chain
    assert not details.uri and not details.HasField("subject")


def test_without_it_envoys_default_sanitize_removes_a_clients_header() -> None:
    for tls in (ListenerTls(*DEFAULT, CA), None):
        config = with_public_tls(tls) if tls is not None else sample_config()
        manager = connection_manager(config)
        assert manager.forward_client_cert_details == _HCM.SANITIZE == 0
        assert not manager.HasField("set_current_client_cert_details")
    # Only the listener that asks for it forwards.
    config = with_public_tls(ListenerTls(*DEFAULT, CA, forward_client_certificate=("uri",)))
    assert connection_manager(config, "internal").forward_client_cert_details == _HCM.SANITIZE
