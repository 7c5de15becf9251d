"""Certificates for the local cluster: one CA, the apiserver's serving certificate,
client certificates per identity, the service-account signing key, and the aggregation
layer's front-proxy CA with the apiserver's client certificate of it.

Generated with `cryptography` (ECDSA P-256: fast to make, accepted by every component).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _load(pair: CertPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


#: The front-proxy client certificate's common name: the apiserver's identity when it
#: proxies a request to an aggregated API server (--requestheader-allowed-names).
FRONT_PROXY_CLIENT = "front-proxy-client"


def create_ca(directory: Path, name: str = "modelship-local-ca", basename: str = "ca") -> CertPair:
    """A self-signed CA as BASENAME.crt/.key in DIRECTORY (reused if it already exists)."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{basename}.crt", directory / f"{basename}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 10 * VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key, pair.key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair


def issue(
    ca: CertPair,
    directory: Path,
    basename: str,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
) -> CertPair:
    """Issue a certificate signed by `ca` (reused if it already exists)."""
    pair = CertPair(directory / f"{basename}.crt", directory / f"{basename}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key, pair.key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair


def front_proxy_paths(directory: Path) -> tuple[CertPair, CertPair]:
    """(front-proxy CA, front-proxy client certificate) as they lie in DIRECTORY."""
    return (
        CertPair(directory / "front-proxy-ca.crt", directory / "front-proxy-ca.key"),
        CertPair(directory / "front-proxy-client.crt", directory / "front-proxy-client.key"),
    )


def create_front_proxy(directory: Path) -> tuple[CertPair, CertPair]:
    """The aggregation layer's CA and the apiserver's client certificate of it.

    A CA of its own, not the cluster CA: an aggregated API server (metrics-server) trusts
    the user and groups in a request's X-Remote-* headers from a client that presents a
    certificate of this CA named front-proxy-client, so no other identity of the cluster
    CA can assert a user that way. Both are reused if they already exist."""
    ca = create_ca(directory, name="modelship-front-proxy-ca", basename="front-proxy-ca")
    client = issue(ca, directory, "front-proxy-client", FRONT_PROXY_CLIENT, client=True)
    return ca, client


def create_service_account_key(directory: Path) -> CertPair:
    """The key pair kube-apiserver signs service-account tokens with (cert = public key)."""
    pair = CertPair(directory / "sa.pub", directory / "sa.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(key, pair.key)
    pair.cert.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pair
