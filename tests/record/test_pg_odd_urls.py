"""A postgresql:// URL typed by hand, against a real server: a password with '#', '?' or '/' not percent-encoded,
a broken [IPv6] host, a database name that is not UTF-8, an option with a bad value.  Each is a configuration
error (exit 3: retrying cannot help), said in one line that holds no piece of the password."""

from __future__ import annotations

import pytest

from fileconveyor.cli import record as record_cli
from fileconveyor.cli import verify as verify_cli
from tests.conftest import call
from tests.servers.postgres import PgServer, pg_server  # noqa: F401 - fixture

SECRET = "Zq7Secret"


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("postgresql://fc:Zq7#Secret@127.0.0.1:{port}/postgres", 3),  # '#' starts a fragment for urllib, not libpq
        ("postgresql://fc:Zq7?Secret@127.0.0.1:{port}/postgres", 3),
        ("postgresql://fc:Zq7/Secret@127.0.0.1:{port}/postgres", 4),  # libpq: host 'fc', port 'Zq7' (DNS: later)
        ("postgresql://fc:Zq7Secret@[::1/postgres", 3),  # urllib raised ValueError while the error was translated
        ("postgresql://fc:Zq7Secret@127.0.0.1:{port}/a%FFb", 3),  # psycopg's UnicodeDecodeError: exit 5, a traceback
        ("postgresql://fc:Zq7Secret@127.0.0.1:notaport/postgres", 3),  # was "try again later" (4)
        ("postgresql://fc:Zq7Secret@127.0.0.1:{port}/postgres?sslmode=bogus", 3),
    ],
)
def test_an_odd_url_is_a_configuration_error_that_shows_no_password(  # type: ignore[no-untyped-def]
    url: str,
    status: int,
    pg_server: PgServer,  # noqa: F811
    tmp_path,
) -> None:
    url = url.format(port=pg_server.port)
    for res in (
        call(record_cli.main, ["--db", url, "--state", str(tmp_path / "r.db")], b""),
        call(record_cli.main, ["--status", "--db", url]),
        call(verify_cli.main, ["--db", url]),
    ):
        assert res.status == status, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not any(piece in res.stderr for piece in ("Zq7", "Secret")), res.stderr
