"""Test certificates made with `cryptography`: a CA, leaves it signs, keys, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

DAY = datetime.timedelta(days=1)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Ca:
    key: PrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)

    def issue(self, common_name: str, key: PrivateKey | None = None, *, server: bool = True,
              not_after: datetime.datetime | None = None,
              serial: int | None = None, dns_names: tuple[str, ...] = ("localhost",),
              uris: tuple[str, ...] = (), client_dns_names: tuple[str, ...] = (),
              ) -> tuple[x509.Certificate, PrivateKey]:
        """A leaf for `common_name` (server: SANs 127.0.0.1 and `dns_names`; else a client certificate,
        with DNS SANs `client_dns_names`). `uris` are URI SANs (a SPIFFE ID), added to either."""
        key = key or ec_key()
        now = datetime.datetime.now(datetime.UTC)
        not_after = not_after or now + 30 * DAY
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject)
                   .public_key(key.public_key())
                   .serial_number(serial or x509.random_serial_number())
                   .not_valid_before(min(now, not_after) - DAY)
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        uri_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), *map(x509.DNSName, dns_names), *uri_names]),
                critical=False)
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
            if client_dns_names or uri_names:
                builder = builder.add_extension(x509.SubjectAlternativeName(
                    [*map(x509.DNSName, client_dns_names), *uri_names]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def make_ca(name: str = "Pavilion Test CA") -> Ca:
    key = ec_key()
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Ca(key, cert)


def write_pair(directory: Path, cert: x509.Certificate, key: PrivateKey, stem: str = "edge",
               chain: tuple[x509.Certificate, ...] = ()) -> tuple[Path, Path]:
    """`stem.pem` (the leaf then `chain`) and `stem-key.pem` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert_pem(cert) + b"".join(cert_pem(c) for c in chain))
    key_path.write_bytes(key_pem(key))
    return cert_path, key_path
