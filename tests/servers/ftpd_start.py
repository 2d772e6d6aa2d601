"""pyftpdlib FTP servers in subprocesses (so a test can kill one mid-transfer): plain FTP, and explicit FTPS with
a self-signed certificate for 127.0.0.1.  The one home of their start-up, for the test suite's fixtures (ftpd.py)
and for tools/try-server (a user trying ftp:// destinations); no pytest here.  The tests' one user's password
holds @ : /."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from .process import ServerProcess, free_port

USER = "conveyor"
PASSWORD = "p@ss:w/rd wïth späce"  # @ : / broke the original; non-ASCII goes as UTF-8


class Missing(RuntimeError):
    """A Python package the server needs is not installed."""


@dataclass
class FtpServer:
    process: ServerProcess
    files: Path  # the user's home: "/" on the server
    ca_file: Path | None  # the certificate to trust, for FTPS
    user: str = USER

    @property
    def port(self) -> int:
        return self.process.port

    def ftp_url(self) -> str:
        """The ``--to`` of fc-transport for the server's root (the password goes in FC_PASSWORD, never here)."""
        scheme = "ftps" if self.ca_file else "ftp"
        return f"{scheme}://{self.user}@127.0.0.1:{self.port}/"


def require(*modules: str) -> None:
    """Missing, naming the first of ``modules`` that cannot be imported."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise Missing(f"Python package {name} is missing")


def start(d: Path, tls: bool, user: str = USER, password: str = PASSWORD, own_session: bool = False) -> FtpServer:
    """pyftpdlib on a free port, serving ``d/files`` as ``user``'s home; its log in ``d``.  Stop it with
    ``.process.stop()``; ``own_session``: see ServerProcess.  Missing if pyftpdlib (or, for TLS, pyOpenSSL and
    cryptography) is not installed."""
    require("pyftpdlib", *(("OpenSSL", "cryptography") if tls else ()))  # pyftpdlib's TLS needs pyOpenSSL
    files = d / "files"
    files.mkdir()
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("ftp_main.py")), str(port), str(files)]
    cert = None
    if tls:
        from .certs import self_signed

        cert, key = self_signed(d)
        argv += [str(cert), str(key)]
    # The password goes through the environment, as File Conveyor's own secrets do, not through argv.
    env = {"FTP_USER": user, "FTP_PASSWORD": password}
    server = ServerProcess("ftps" if tls else "ftp", argv, port, d / "ftpd.log", env, own_session)
    server.start()
    return FtpServer(server, files, cert, user)
