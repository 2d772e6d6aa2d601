"""The PostgreSQL the shared-record tests use is real: a cluster of its own, a database per test, a password."""

from __future__ import annotations

import pytest

try:
    import psycopg
except ImportError:  # the pg_server fixture says so: a failure in CI, a skip elsewhere
    psycopg = None  # type: ignore[assignment]

from tests.servers.postgres import PgServer


def test_a_database_per_test_with_a_password(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone()
        assert name.startswith("t_")
        (version,) = conn.execute("SHOW server_version_num").fetchone()
        assert int(version) >= 120000
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.url(name, password="wrong")).close()
