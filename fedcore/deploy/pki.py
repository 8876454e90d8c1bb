"""The credentials of one federation, made with `cryptography` (Flower's own dependency).

- a certificate authority (CA): its certificate goes to every SuperNode and to the
  machine that runs `flwr`; its private key signs the SuperLink's certificate and is
  needed nowhere else;
- the SuperLink's TLS certificate (for the addresses the SuperNodes dial) and key;
- per SuperNode an EC key pair (NIST P-384, OpenSSH format, as Flower asks): the
  private key stays with the data holder, the public key is registered with the
  SuperLink (`flwr supernode register`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RUN_DAYS = 2  # a run's credentials are made again for every run


@dataclass(frozen=True)
class ServerCredentials:
    ca_cert: Path  # public: SuperNodes and the `flwr` CLI verify the SuperLink with it
    cert: Path  # the SuperLink's certificate (public)
    key: Path  # the SuperLink's private key (stays on the SuperLink's machine)


@dataclass(frozen=True)
class NodeKey:
    private: Path  # `flower-supernode --auth-supernode-private-key` (stays with the holder)
    public: Path  # `flwr supernode register` (goes to the SuperLink's operator)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_server_credentials(
    folder: Path,
    addresses: Sequence[str],
    hostnames: Sequence[str] = ("localhost",),
    days: int = RUN_DAYS,
) -> ServerCredentials:
    """A CA, and a SuperLink certificate it signs for `addresses` (IPs) and `hostnames`,
    both valid for `days`; the CA's private key is not kept."""
    folder = Path(folder)
    now = datetime.datetime.now(datetime.UTC)
    valid_for = datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcore federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcore SuperLink")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    return ServerCredentials(
        ca_cert=_write(folder / "ca.pem", ca_cert.public_bytes(pem)),
        cert=_write(folder / "superlink.pem", cert.public_bytes(pem)),
        key=_write(folder / "superlink.key", _private_pem(key), private=True),
    )  # the CA's private key is dropped here: nothing else is signed with it


def make_node_key(folder: Path, name: str) -> NodeKey:
    """An EC P-384 key pair in OpenSSH format: `<name>` (private) and `<name>.pub`."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return NodeKey(
        private=_write(folder / name, private, private=True),
        public=_write(folder / f"{name}.pub", public + f" {name}\n".encode()),
    )
