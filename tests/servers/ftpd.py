"""pyftpdlib FTP servers in subprocesses (so a test can kill one mid-transfer): plain FTP, and explicit FTPS
with a self-signed certificate for 127.0.0.1 made by the fixture.  The one user's password holds @ : /."""

from __future__ import annotations

import datetime
import ipaddress
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import unavailable

from .process import ServerProcess, free_port

USER = "conveyor"
PASSWORD = "p@ss:w/rd wïth späce"  # @ : / broke the original; non-ASCII goes as UTF-8


@dataclass
class FtpServer:
    process: ServerProcess
    files: Path  # the user's home: "/" on the server
    ca_file: Path | None  # the certificate to trust, for FTPS

    @property
    def port(self) -> int:
        return self.process.port


def _self_signed(d: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = d / "cert.pem", d / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _start(d: Path, tls: bool) -> FtpServer:
    files = d / "files"
    files.mkdir()
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("ftp_main.py")), str(port), str(files)]
    cert = None
    if tls:
        cert, key = _self_signed(d)
        argv += [str(cert), str(key)]
    # The password goes through the environment, as File Conveyor's own secrets do, not through argv.
    env = {"FTP_USER": USER, "FTP_PASSWORD": PASSWORD}
    server = ServerProcess("ftps" if tls else "ftp", argv, port, d / "ftpd.log", env)
    server.start()
    return FtpServer(server, files, cert)


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    _require_module("pyftpdlib")
    server = _start(tmp_path_factory.mktemp("ftpd"), tls=False)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    _require_module("pyftpdlib")
    _require_module("OpenSSL")  # pyftpdlib's TLS needs pyOpenSSL
    _require_module("cryptography")  # for the certificate
    server = _start(tmp_path_factory.mktemp("ftpsd"), tls=True)
    yield server
    server.process.stop()


def _require_module(name: str) -> None:
    """A missing Python package fails in CI (where make test-deps installed it) and skips elsewhere."""
    try:
        __import__(name)
    except ImportError:
        msg = f"Python package {name} is missing (make test-deps installs it)"
        unavailable(msg)
