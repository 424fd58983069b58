"""wsconsole's local certificate authority: made on first use, kept in the user data folder.

One CA for everything local that serves TLS: `wsconsole proxy --tls` (and `--forward`, which
intercepts wss:// tunnels with a certificate per host) and `wsconsole harness --tls` (the
balancer and the nodes serve wss://). A browser or OS that trusts the CA's certificate
(docs/harness.md and docs/proxy.md say how) talks TLS to them without a warning, and the
console's own clients trust it by themselves for loopback hosts (core/tls.py).

The CA is an EC P-256 key and a self-signed certificate valid ten years, written once to
`ca-cert.pem` and `ca-key.pem` (mode 0600) in `default_ca_dir()` - `local-ca` in
platformdirs' user data folder for wsconsole, or in `$WSCONSOLE_DATA_DIR` (tests, portable
installs). Host certificates (397 days, the longest browsers accept) are issued per host
name: in memory for a server in this process (`server_context`), or written to a private
folder for a child process that serves TLS (`write_server_files`).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wsconsole.errors import WsconsoleError

DATA_DIR_ENV = "WSCONSOLE_DATA_DIR"
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CA_YEARS = 10
HOST_DAYS = 397


class CAError(WsconsoleError):
    """The local CA cannot be read or written (the message names the file)."""


def default_ca_dir() -> Path:
    """Where the local CA lives: `local-ca` in `$WSCONSOLE_DATA_DIR` or the user data folder."""
    base = os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir("wsconsole",
                                                                         appauthor=False)
    return Path(base) / "local-ca"


def existing_ca_file() -> Path | None:
    """The local CA's certificate if it was made already (None otherwise: nothing is made)."""
    path = default_ca_dir() / CA_CERT
    return path if path.is_file() else None


@dataclass(frozen=True)
class ServerFiles:
    """A host certificate for a child process: the chain (host, then CA) and its key (PEM)."""

    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


class LocalCA:
    """The CA certificate and key, and the host certificates it issues."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_ca_dir()
        self.cert_path = self.folder / CA_CERT
        self.key_path = self.folder / CA_KEY
        self.created = False
        self._cert, self._key = self._load_or_create()
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}

    @property
    def certificate(self) -> x509.Certificate:
        """The CA's certificate (what a browser or OS is asked to trust)."""
        return self._cert

    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the CA certificate, as browsers show it (AA:BB:...)."""
        digest = self._cert.fingerprint(hashes.SHA256())
        return ":".join(f"{byte:02X}" for byte in digest)

    def _load_or_create(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self.cert_path.exists() and self.key_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
                key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            except (OSError, ValueError) as exc:
                raise CAError(f"cannot read the local CA in {self.folder}: {exc} (delete "
                              "the folder to make a new CA)") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CAError(f"{self.key_path} is not an EC key (delete the folder)")
            return cert, key
        return self._create()

    def _create(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wsconsole"),
            x509.NameAttribute(NameOID.COMMON_NAME, "wsconsole local CA"),
        ])
        now = _now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(_pem_key(key))
            self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            raise CAError(f"cannot write the local CA to {self.folder}: {exc}") from None
        self.created = True
        return cert, key

    def issue(self, hosts: Sequence[str]) -> tuple[bytes, bytes]:
        """A certificate (PEM, followed by the CA's) and its key (PEM) for `hosts`."""
        if not hosts:
            raise ValueError("a host certificate needs at least one host name")
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        public = key.public_key()
        issuer_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
            .issuer_name(self._cert.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=HOST_DAYS))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
                critical=False)
            .sign(self._key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self._cert.public_bytes(
            serialization.Encoding.PEM)
        return chain, _pem_key(key)

    def write_server_files(self, hosts: Sequence[str], folder: Path) -> ServerFiles:
        """Issue a certificate for `hosts` and write it with its key to `folder` (created,
        mode 0700; files mode 0600), for a server in another process."""
        chain, key = self.issue(hosts)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            files = ServerFiles(folder / "server-cert.pem", folder / "server-key.pem")
            for path, data in ((files.cert, chain), (files.key, key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
        except OSError as exc:
            raise CAError(f"cannot write a server certificate to {folder}: {exc}") from None
        return files

    def server_context(self, hosts: Sequence[str]) -> ssl.SSLContext:
        """A TLS server context presenting a certificate for `hosts` (cached), HTTP/1.1 only."""
        wanted = tuple(dict.fromkeys(h.lower() for h in hosts))
        context = self._contexts.get(wanted)
        if context is not None:
            return context
        # ssl loads certificates from files only: write them to a private temporary folder.
        label = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
        with tempfile.TemporaryDirectory(prefix="wsconsole-ca-") as folder:
            files = self.write_server_files(wanted, Path(folder) / label)
            context = server_context(files)
        self._contexts[wanted] = context
        return context


def server_context(files: ServerFiles) -> ssl.SSLContext:
    """A TLS server context presenting `files`, HTTP/1.1 only (a WebSocket upgrade needs it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(files.cert, files.key)
    return context
