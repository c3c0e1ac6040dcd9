"""Forward reach: the jobs' calls to the hub go through a port on the site's login node, which
any user of that login node could listen on while the tunnel daemon's forward is down (after a
dropped connection, before the login node lets the port go and the daemon takes it again). So
the hub answers there over TLS, with a certificate from a small CA of the tunnel daemon's own,
and the job trusts that CA alone for the hub: a process that takes the port gets a TLS
handshake it cannot complete, never a request with the job's token in it.

The CA (ten years) and the server certificate (one name for each site's login node, made again
when the names change) live in the daemon's state directory, readable by the hub's user only.
The relay ends TLS on a unix socket beside the daemon's database and passes the bytes to the
hub's API port.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aifa_workbench.model.files import write_atomically

log = logging.getLogger(__name__)
CA_DAYS = 3650
SERVER_DAYS = 3650
RELAY_CHUNK = 65536


@dataclass(frozen=True)
class HubApiCertificates:
    ca_pem: str  # what each job trusts for the hub, and nothing else
    cert_file: Path  # the server certificate, then the CA's (the chain the relay presents)
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def ensure_certificates(directory: Path, hosts: list[str]) -> HubApiCertificates:
    """The CA (made once) and a server certificate naming each of `hosts` (made again when the
    names differ, e.g. a site added: running jobs keep working, they trust the CA)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    ca_key, ca_cert = _ca(directory)
    key_file, cert_file = directory / "server.key", directory / "server.pem"
    wanted = sorted({_normal(host) for host in hosts})
    if not _server_certificate_fits(cert_file, key_file, ca_cert, wanted):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, ca_key, ca_cert, wanted)
        write_atomically(key_file, _key_pem(key))
        write_atomically(
            cert_file, cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
    return HubApiCertificates(ca_cert.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file)


def _server_certificate_fits(cert_file: Path, key_file: Path, ca_cert, wanted: list[str]) -> bool:
    """Names the wanted hosts, was issued by this CA (a CA made again makes it again), and goes
    with its key (a crash between writing the two leaves them apart)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    same_key = cert.public_key().public_bytes(*_SPKI) == key.public_key().public_bytes(*_SPKI)
    return same_key and _names(cert) == wanted


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _ca(directory: Path):
    key_file, cert_file = directory / "ca.key", directory / "ca.pem"
    if key_file.exists() and cert_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AIFA Workbench hub API (forward reach)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomically(key_file, _key_pem(key))
    write_atomically(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _server_certificate(key, ca_key, ca_cert, hosts: list[str]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [_general_name(host) for host in hosts]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AIFA Workbench hub API")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sorted(
        [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    )


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class HubApiRelay:
    """TLS on a unix socket of the daemon's state directory (the login node's forward ends
    there: no port of this host to take or to collide with), passed on in plain HTTP to the
    hub's API port. `start_tcp` serves the same on a loopback port, for tests."""

    def __init__(self, certificates: HubApiCertificates, hub_api_port: int):
        self.context = certificates.server_context()
        self.hub_api_port = hub_api_port
        self.server: asyncio.base_events.Server | None = None

    async def start(self, path: Path) -> Path:
        path.unlink(missing_ok=True)
        old_umask = os.umask(0o077)  # the hub's user only
        try:
            self.server = await asyncio.start_unix_server(
                self._relay, str(path), ssl=self.context, ssl_handshake_timeout=15
            )
        finally:
            os.umask(old_umask)
        return path

    async def start_tcp(self) -> int:
        self.server = await asyncio.start_server(
            self._relay, "127.0.0.1", 0, ssl=self.context, ssl_handshake_timeout=15
        )
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            hub_reader, hub_writer = await asyncio.open_connection("127.0.0.1", self.hub_api_port)
        except OSError as e:
            log.warning("Hub API relay: the hub's API port %s did not answer: %s", self.hub_api_port, e)
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, hub_writer), _pipe(hub_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:  # HTTP does not half-close: one side's end ends both (the other pipe reads EOF)
        writer.close()
