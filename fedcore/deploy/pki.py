"""The credentials of one federation, made with `cryptography` (Flower's own dependency).

- a certificate authority (CA): its certificate goes to every SuperNode and to the
  operator; its private key signs two certificates and is kept nowhere;
- the SuperLink's TLS certificate (for the addresses the SuperNodes dial) and key,
  which the front door (`fedcore.deploy.proxy`) presents;
- the operator's client certificate and key: the front door opens the SuperLink's
  control side (registering SuperNodes, starting, stopping and listing runs, their
  logs and results) to this certificate only;
- per SuperNode an EC key pair (NIST P-384, OpenSSH format, as Flower asks): the
  private key stays with the data holder, the public key is registered with the
  SuperLink (`flwr supernode register`).

Every file is created exclusively (`O_EXCL | O_NOFOLLOW`), 0600 if it holds a
private key and 0644 otherwise, whatever the umask: an existing file or a symbolic
link where a key goes is refused with one line, never overwritten or followed.
"""

from __future__ import annotations

import datetime
import errno
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
OPERATOR_NAME = "fedcore operator"  # the front door admits this certificate's subject only
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "superlink.pem", "superlink.key"
OPERATOR_CERT_FILE, OPERATOR_KEY_FILE = "operator.pem", "operator.key"


class CredentialError(RuntimeError):
    """A key or certificate cannot be written where it should go (one line)."""


@dataclass(frozen=True)
class FederationCredentials:
    ca_cert: Path  # public: SuperNodes, the front door and the operator verify with it
    cert: Path  # the SuperLink's certificate (public)
    key: Path  # the SuperLink's private key (stays on the SuperLink's machine)
    operator_cert: Path  # the operator's client certificate (public)
    operator_key: Path  # the operator's private key (stays on the operator's machine)


@dataclass(frozen=True)
class NodeKey:
    private: Path  # `flower-supernode --auth-supernode-private-key` (stays with the holder)
    public: Path  # `flwr supernode register` (goes to the SuperLink's operator)


def _open_folder(folder: Path) -> int:
    """The folder, made 0700 if missing; refused if it is a symbolic link."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise CredentialError(f"{folder}: cannot make the folder ({error.strerror})") from None
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        why = "a symbolic link" if os.path.islink(folder) else error.strerror
        raise CredentialError(f"{folder}: not a folder to write keys into ({why})") from None


def write_exclusive(path: Path, data: bytes, private: bool = False) -> Path:
    """Create `path` with `data`, never over an existing file or through a link."""
    path = Path(path)
    mode = 0o600 if private else 0o644
    folder = _open_folder(path.parent)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path.name, flags, mode, dir_fd=folder)
    except OSError as error:
        if os.path.islink(path):
            why = "is a symbolic link: keys are never written through one"
        elif error.errno == errno.EEXIST:
            why = "exists already: keys and certificates are never overwritten"
        else:
            why = f"cannot be created ({error.strerror})"
        raise CredentialError(f"{path} {why}") from None
    finally:
        os.close(folder)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)  # the umask does not decide who may read a key
        file.write(data)
    return path


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _signed(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
    valid_for: datetime.timedelta,
) -> x509.Certificate:
    """An end-entity certificate for `subject`, signed by the CA, for one `usage`."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA384())


def make_federation_credentials(
    folder: Path,
    addresses: Sequence[str],
    hostnames: Sequence[str] = ("localhost",),
    days: int = RUN_DAYS,
) -> FederationCredentials:
    """A CA; a SuperLink certificate it signs for `addresses` (IPs) and `hostnames`
    (and 127.0.0.1, localhost); the operator's client certificate; all valid for
    `days`. The CA's private key is not kept: nothing else can ever be signed with it."""
    folder = Path(folder)
    now = datetime.datetime.now(datetime.UTC)
    valid_for = datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("fedcore federation CA")
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
    # The hops on the SuperLink's own machine (front door and SuperExec to the
    # SuperLink) dial it at 127.0.0.1 and verify it as `localhost`.
    dns, ips = dict.fromkeys(["localhost", *hostnames]), dict.fromkeys(["127.0.0.1", *addresses])
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = _signed("fedcore SuperLink", key, ca_key, ca_name, ExtendedKeyUsageOID.SERVER_AUTH,
                   names, valid_for)  # fmt: skip
    operator_key = ec.generate_private_key(ec.SECP384R1())
    operator_cert = _signed(OPERATOR_NAME, operator_key, ca_key, ca_name,
                            ExtendedKeyUsageOID.CLIENT_AUTH, [], valid_for)  # fmt: skip
    pem = serialization.Encoding.PEM
    return FederationCredentials(
        ca_cert=write_exclusive(folder / CA_FILE, ca_cert.public_bytes(pem)),
        cert=write_exclusive(folder / CERT_FILE, cert.public_bytes(pem)),
        key=write_exclusive(folder / KEY_FILE, _private_pem(key), private=True),
        operator_cert=write_exclusive(folder / OPERATOR_CERT_FILE, operator_cert.public_bytes(pem)),
        operator_key=write_exclusive(folder / OPERATOR_KEY_FILE, _private_pem(operator_key),
                                     private=True),
    )  # fmt: skip  # the CA's private key is dropped here


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
        private=write_exclusive(Path(folder) / name, private, private=True),
        public=write_exclusive(Path(folder) / f"{name}.pub", public + f" {name}\n".encode()),
    )
