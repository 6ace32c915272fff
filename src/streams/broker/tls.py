"""Certificates for the local broker's SASL_SSL listener (``cryptography``), made on start.

``make_local_tls(directory)`` writes a throw-away CA (``ca.crt``, what clients trust:
``STREAMS_SSL_CAFILE``) and a server certificate it signed for ``localhost`` and
``127.0.0.1``, with its unencrypted PKCS#8 key, as one PEM file that Kafka reads as a
``PEM`` keystore (``server.pem``). Nothing here is fit for anything but a local broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

VALID_DAYS = 365
SCRAM_USER = "streams"


@dataclass(frozen=True)
class LocalTls:
    ca_file: Path
    server_pem: Path


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_local_tls(
    directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> LocalTls:
    """A new CA and a server certificate for ``hosts`` under ``directory`` (files 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = _key()
    ca_name = _name("streams local broker CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.crt"
    server_pem = directory / "server.pem"
    pem = serialization.Encoding.PEM
    _write(ca_file, ca.public_bytes(pem))
    key_bytes = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(server_pem, key_bytes + server.public_bytes(pem) + ca.public_bytes(pem))
    return LocalTls(ca_file=ca_file, server_pem=server_pem)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class SaslSslListener:
    """What a client needs for the local broker's SASL_SSL listener."""

    bootstrap: str
    ca_file: Path
    username: str
    password: str

    def env(self) -> dict[str, str]:
        """The STREAMS_* variables of a client of this listener."""
        return {
            "STREAMS_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMS_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMS_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMS_SASL_USERNAME": self.username,
            "STREAMS_SASL_PASSWORD": self.password,
            "STREAMS_SSL_CAFILE": str(self.ca_file),
        }


def scram_password(state_dir: Path) -> str:
    """The SCRAM password of the local broker's user, made once (``sasl-password``, 0600)."""
    import secrets

    path = state_dir / "sasl-password"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24).replace("-", "_")
    _write(path, password.encode())
    return password
