"""pyftpdlib FTP servers in subprocesses (so a test can kill one mid-transfer): plain FTP, and explicit FTPS
with a self-signed certificate for 127.0.0.1 made by the fixture.  The one user's password holds @ : /."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import unavailable

from .certs import self_signed
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


def _start(d: Path, tls: bool) -> FtpServer:
    files = d / "files"
    files.mkdir()
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("ftp_main.py")), str(port), str(files)]
    cert = None
    if tls:
        cert, key = self_signed(d)
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
