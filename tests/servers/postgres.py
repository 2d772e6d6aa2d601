"""A throwaway PostgreSQL cluster from Debian's packages: ``initdb`` in a temporary directory, ``postgres`` on a
free 127.0.0.1 port (and a unix socket in that directory), one per test session; a database per test.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster belongs to the ``postgres``
user that Debian's package creates (else ``nobody``) and its programs run under ``setpriv``.  The superuser logs in
with a password (scram-sha-256) that holds ``@ : /``, so URLs with a password are tested as users write them.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import require_tool, unavailable

from .process import ServerProcess, free_port

USER = "fc"
PASSWORD = "pg@ss:w/rd"
_counter = itertools.count()


@dataclass
class PgServer:
    process: ServerProcess
    socket_dir: Path
    data: Path

    @property
    def port(self) -> int:
        return self.process.port

    def url(self, dbname: str = "postgres", password: str | None = PASSWORD, user: str = USER) -> str:
        secret = f":{quote(password, safe='')}" if password is not None else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"

    def admin(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.url(), autocommit=True)

    def new_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def _binaries() -> Path:
    """The newest installed server's bin directory (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    return Path(require_tool("postgres", "the shared-record tests use PostgreSQL (Debian: postgresql)")).parent


def _as_owner() -> tuple[list[str], int, int]:
    """(command prefix, uid, gid) that run the server's programs as a user other than root."""
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    setpriv = require_tool("setpriv", "to run PostgreSQL as a user other than root (Debian: util-linux)")
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"], pw.pw_uid, pw.pw_gid
    unavailable("no postgres or nobody user to run PostgreSQL as (it refuses to run as root)")


def _ready(pg: PgServer, timeout: float = 30) -> None:
    """The port listens before the cluster takes logins ("the database system is starting up")."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            pg.admin().close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def cluster() -> Iterator[PgServer]:
    """A new cluster, stopped and removed on exit (the fixture below; bench/scale_chaos.py outside pytest)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (make test-deps installs it)")
    bindir = _binaries()
    prefix, uid, gid = _as_owner()
    # Not under pytest's 0700 temporary tree: the server's user must reach it.
    d = Path(tempfile.mkdtemp(prefix="fc-pg-"))
    try:
        os.chmod(d, 0o755)
        data, sock = d / "data", d / "sock"
        for sub in (data, sock):
            sub.mkdir(mode=0o700)
            os.chown(sub, uid, gid)
        pwfile = d / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chown(pwfile, uid, gid)
        os.chmod(pwfile, 0o600)
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=d,
        )  # fmt: skip
        port = free_port()
        # fsync off: a throwaway cluster (only a machine crash loses what fsync keeps).  synchronous_commit stays
        # on: off, a kill -9 of the server loses commits it had confirmed, which no client can make up for.
        argv = [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                "-k", str(sock), "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB"]  # fmt: skip
        server = ServerProcess("postgres", argv, port, d / "postgres.log")
        server.start(timeout=30)
        pg = PgServer(server, sock, data)
        try:
            _ready(pg)
            yield pg
        finally:
            if server.proc is not None:  # a fast shutdown, so no shared memory is left behind
                server.proc.send_signal(signal.SIGINT)
                try:
                    server.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            server.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with cluster() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL (password included) of a new, empty database for this test."""
    return pg_server.url(pg_server.new_database())
