"""One ``backend`` fixture per destination kind, each against its real server; the contract suite runs on all.

Adding a backend (S3, Swift, ...) is one fixture: start its server in tests/servers/, write ``<name>_backend``
here returning a Backend, and add the name to BACKENDS (and REMOTE when it has a server and credentials).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from fileconveyor.transporters import Transporter, for_destination, parse_destination
from tests.servers.ftpd import PASSWORD, USER, FtpServer, ftp_server, ftps_server  # noqa: F401 - fixtures
from tests.servers.process import ServerProcess
from tests.servers.s3 import S3Server, s3_server  # noqa: F401 - fixtures
from tests.servers.sshd import SshServer, sshd_server  # noqa: F401 - fixtures
from tests.servers.swift import SwiftServer, swift_server  # noqa: F401 - fixtures

BACKENDS = ["file", "ftp", "ftps", "sftp", "sftp_paramiko", "s3", "cf", "cloudfiles"]
# Those with credentials and a server process to kill.
REMOTE = ["ftp", "ftps", "sftp", "sftp_paramiko", "s3", "cf", "cloudfiles"]
PUBLIC_URL = "https://cdn.example/static"


@dataclass
class Backend:
    name: str
    spec: str  # the destination URL, without settings
    files: Path  # where the destination's files land, seen on the server's own file system
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # secrets, as the environment would hold them
    server: ServerProcess | None = None  # None: nothing to kill (a local folder)
    cannot_carry: tuple[str, ...] = ()  # HOSTILE names the protocol cannot carry: they must be refused
    wrong_credentials: dict[str, str] | None = None  # settings or FC_* variables that make login fail (REMOTE)
    failed_login: str = ""  # what the server logs for each failed login, to count attempts
    opened: list[Transporter] = field(default_factory=list)

    def make(self, **overrides: str) -> Transporter:
        """A new, unconnected transporter for this test's destination; ``FC_*`` overrides go to the environment."""
        settings = {**self.settings, **{k: v for k, v in overrides.items() if not k.startswith("FC_")}}
        env = {**self.env, **{k: v for k, v in overrides.items() if k.startswith("FC_")}}
        spec = self.spec + ("?" + urlencode(settings) if settings else "")
        tp = for_destination(parse_destination(spec, url=PUBLIC_URL, env=env))
        self.opened.append(tp)
        return tp


def _backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    yield b
    for tp in b.opened:
        tp.close()
    if b.server is not None and not b.server.running:
        b.server.start()  # a test that killed the session's server failed before restarting it


backend = pytest.fixture(params=BACKENDS)(_backend)
remote_backend = pytest.fixture(params=REMOTE)(_backend)
# Object stores have no directories ("f" and "f/x" are two keys): contract tests about
# directories run on the others, and tests/transporters/test_cloud.py checks what the stores do.
OBJECT_STORES = {"s3", "cf", "cloudfiles"}
directory_backend = pytest.fixture(params=[b for b in BACKENDS if b not in OBJECT_STORES])(_backend)


@pytest.fixture
def tp(backend: Backend) -> Transporter:
    return backend.make()


def _unique() -> str:
    return "t-" + secrets.token_hex(4)  # each test gets its own directory on the shared session servers


@pytest.fixture
def file_backend(tmp_path: Path) -> Backend:
    files = tmp_path / "dest"
    return Backend("file", "file://" + quote(str(files)), files)


def _ftp_backend(server: FtpServer, scheme: str) -> Backend:
    sub = _unique()
    return Backend(
        scheme,
        f"{scheme}://{USER}@127.0.0.1:{server.port}/{sub}",
        server.files / sub,
        settings={"timeout": "10", **({"ca_file": str(server.ca_file)} if server.ca_file else {})},
        env={"FC_PASSWORD": PASSWORD},
        server=server.process,
        cannot_carry=("newline", "not-utf8"),
        wrong_credentials={"FC_PASSWORD": PASSWORD + "x"},
        failed_login="failed login",
    )


@pytest.fixture
def ftp_backend(ftp_server: FtpServer) -> Backend:  # noqa: F811 - the fixture is its own argument
    return _ftp_backend(ftp_server, "ftp")


@pytest.fixture
def ftps_backend(ftps_server: FtpServer) -> Backend:  # noqa: F811
    return _ftp_backend(ftps_server, "ftps")


def _sftp_backend(server: SshServer) -> Backend:
    files = server.files / _unique()
    return Backend(
        "sftp",
        f"sftp://{server.user}@127.0.0.1:{server.port}{quote(str(files))}",
        files,
        settings={
            "key_file": str(server.key_file),
            "known_hosts": str(server.known_hosts),
            "agent": "no",
            "timeout": "10",
        },
        server=server.process,
        wrong_credentials={"key_file": str(server.wrong_key_file)},
        failed_login="Failed publickey",
    )


@pytest.fixture
def sftp_backend(sshd_server: SshServer) -> Iterator[Backend]:  # noqa: F811
    """Closes what a test made with it (``_backend`` does too, for the contract suites): a transporter left open
    holds a session on the process's shared SSH login, and past ssh_master.MAX_SESSIONS of them the next tests'
    connections logged in alone (test_ssh_master.py failed after test_sftp_client.py)."""
    b = _sftp_backend(sshd_server)
    yield b
    for tp in b.opened:
        tp.close()


@pytest.fixture
def sftp_paramiko_backend(sshd_server: SshServer) -> Backend:  # noqa: F811
    """SFTP over paramiko's own SSH (what passwords, passphrases and trust_unknown_host use); the plain sftp
    backend above logs in with a key, so it runs over OpenSSH's ssh client (engine=auto)."""
    b = _sftp_backend(sshd_server)
    b.settings["engine"] = "paramiko"
    return b


@pytest.fixture
def s3_backend(s3_server: S3Server) -> Backend:  # noqa: F811
    from tests.servers import s3

    sub = _unique()
    return Backend(
        "s3",
        f"s3://{s3.BUCKET}/{sub}",
        s3_server.files / s3.BUCKET / sub,
        settings={"endpoint_url": s3_server.endpoint, "profile": s3.PROFILE, "timeout": "10"},
        server=s3_server.process,
        cannot_carry=("newline", "not-utf8"),
        wrong_credentials={"profile": s3.WRONG_PROFILE},
        failed_login=s3.FAILED_LOGIN,
    )


@pytest.fixture
def cf_backend(s3_backend: Backend, s3_server: S3Server) -> Backend:  # noqa: F811
    """The s3 backend through CloudFront: a distribution made per test (a restarted moto forgets it)."""
    from fileconveyor.transporters.cf_setup import create_distribution
    from tests.servers import s3

    dist = create_distribution(s3.BUCKET, endpoint_url=s3_server.endpoint, profile=s3.PROFILE, wait=False).id
    s3_backend.name = "cf"
    s3_backend.spec = "cf" + s3_backend.spec[2:]
    s3_backend.settings = {**s3_backend.settings, "distribution_id": dist, "invalidate_after": "0.5"}
    return s3_backend


@pytest.fixture
def cloudfiles_backend(swift_server: SwiftServer) -> Backend:  # noqa: F811
    from tests.servers import swift

    sub = _unique()
    return Backend(
        "cloudfiles",
        f"cloudfiles://{quote(swift.USER, safe='')}@{swift.CONTAINER}/{sub}",
        swift_server.files / swift.CONTAINER / sub,
        settings={"auth_url": swift_server.auth_url, "timeout": "10"},
        env={"FC_PASSWORD": swift.KEY},
        server=swift_server.process,
        cannot_carry=("not-utf8",),
        wrong_credentials={"FC_PASSWORD": swift.KEY + "x"},
        failed_login=swift.FAILED_LOGIN,
    )


def events_for(root: Path, rels: list[str], kind: str = "created") -> bytes:
    """fc-watch's lines for ``rels`` under ``root``: what fc-transport reads."""
    out = []
    for rel in rels:
        ev: dict = {"v": 1, "kind": kind, "source": "site", "root": str(root), "path": str(root / rel), "rel": rel}
        if kind != "deleted":
            ev["size"] = (root / rel).stat().st_size
        out.append(json.dumps(ev) + "\n")
    return "".join(out).encode()
