"""The record's readers on PostgreSQL (fc-verify, --record-db, --status): postgres.py's tables, read only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .model import EXTRA_COLUMNS, db_key, key_bytes, remote_name
from .pg_connect import _Conn, _name


class PgReader(_Conn):
    """A read-only connection for the record's readers (fc-verify, --record-db, --status)."""

    def __init__(self, url: str):
        super().__init__(url, read_only=True)
        self._tables: set[str] | None = None

    def x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.ensure()  # each read stands alone (autocommit): a new connection after a lost one is safe
        return super().x(sql, params)

    def _has(self, table: str) -> bool:
        if self._tables is None or table not in self._tables:  # fc-record may create them after we start
            names = ("synced_files", "sync_failures", "source_deletions")
            rows = self.x("SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL", (list(names),))
            self._tables = {t for (t,) in rows}
        return table in self._tables

    def has_synced(self) -> bool:
        return self._has("synced_files")

    def count(self) -> int:
        return int(self.x("SELECT count(*) FROM synced_files").fetchone()[0]) if self.has_synced() else 0

    def synced_by_server(self) -> dict[str, int]:
        if not self.has_synced():
            return {}
        return dict(self.x("SELECT server, count(*) FROM synced_files GROUP BY server ORDER BY 1").fetchall())

    def failed_by_server(self) -> dict[str, int]:
        if not self._has("sync_failures"):
            return {}
        return dict(self.x("SELECT server, count(*) FROM sync_failures GROUP BY server ORDER BY 1").fetchall())

    def deletions(self) -> tuple[int, int]:
        if not self._has("source_deletions"):
            return 0, 0
        sql = "SELECT count(*) - count(deleted_at), count(deleted_at) FROM source_deletions"
        scheduled, done = self.x(sql).fetchone()
        return int(scheduled), int(done)

    def rows(self, servers: Sequence[str] = ()) -> Iterator[tuple]:
        """As sqlite_reader.SqliteReader.rows: names as text, or bytes when not UTF-8."""
        names = {"remote", "root", "rel"}
        extra = ", ".join(f"{c}, {c}_bytes" if c in names else c for c in EXTRA_COLUMNS)
        sql = (
            f"SELECT input_file_bytes, transported_file_basename, basename_bytes, url, server, {extra}"
            " FROM synced_files"
        )
        args: list[Any] = []
        if servers:
            sql += " WHERE server = ANY(%s)"
            args.append(list(servers))
        for r in self.x(sql + " ORDER BY server, input_file_bytes", args):
            out: list[Any] = [db_key(bytes(r[0])), _name(r[1], r[2]), r[3], r[4]]
            i = 5
            for c in EXTRA_COLUMNS:
                if c in names:
                    out.append(_name(r[i], r[i + 1]))
                    i += 2
                else:
                    out.append(r[i])
                    i += 1
            yield tuple(out)

    def deleted_by_us(self) -> set[str | bytes]:
        if not self._has("source_deletions"):
            return set()
        rows = self.x("SELECT input_file_bytes FROM source_deletions WHERE deleted_at IS NOT NULL")
        return {db_key(bytes(k)) for (k,) in rows}

    def deletion_mark(self, input_file: str | bytes) -> tuple[float | None, str | None] | None:
        if not self._has("source_deletions"):
            return None
        sql = "SELECT deleted_at, event_id FROM source_deletions WHERE input_file_bytes=%s"
        return self.x(sql, (key_bytes(input_file),)).fetchone()

    def url(self, input_file: str | bytes, server: str) -> tuple[str, str | bytes] | None:
        if not self.has_synced():
            return None
        row = self.x(
            "SELECT url, transported_file_basename, basename_bytes FROM synced_files"
            " WHERE input_file_bytes = %s AND server = %s",
            (key_bytes(input_file), server),
        ).fetchone()
        return None if row is None else (row[0], _name(row[1], row[2]))

    def remote(self, input_file: str | bytes, server: str) -> bytes | None:
        if not self.has_synced():
            return None
        row = self.x(
            "SELECT remote, remote_bytes, rel, rel_bytes, transported_file_basename, basename_bytes FROM synced_files"
            " WHERE input_file_bytes = %s AND server = %s",
            (key_bytes(input_file), server),
        ).fetchone()
        return None if row is None else remote_name(_name(row[0], row[1]), _name(row[2], row[3]), _name(row[4], row[5]))
