"""The record's readers on SQLite (fc-verify, --record-db, --status): sqlite.py's file, opened read only."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ConfigError
from .model import EXTRA_COLUMNS, remote_name
from .sqlite import columns, deletion_mark, has_table, open_readonly


class SqliteReader:
    """A read-only connection for the record's readers (fc-verify, --record-db, --status): never creates it."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.path.abspath(path)
        self.name = self.path
        self.db = open_readonly(path)

    def close(self) -> None:
        self.db.close()

    def _rows(self, table: str, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Rows of ``sql``, none when ``table`` is missing (a database older than the table)."""
        try:
            return self.db.execute(sql, args).fetchall() if has_table(self.db, table) else []
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None

    def has_synced(self) -> bool:
        return has_table(self.db, "synced_files")

    def count(self) -> int:
        return int(self._rows("synced_files", "SELECT count(*) FROM synced_files")[0][0]) if self.has_synced() else 0

    def synced_by_server(self) -> dict[str, int]:
        return dict(self._rows("synced_files", "SELECT server, count(*) FROM synced_files GROUP BY server ORDER BY 1"))

    def failed_by_server(self) -> dict[str, int]:
        return dict(
            self._rows("sync_failures", "SELECT server, count(*) FROM sync_failures GROUP BY server ORDER BY 1")
        )

    def deletions(self) -> tuple[int, int]:
        """(scheduled, done) source deletions."""
        rows = self._rows(
            "source_deletions", "SELECT count(*) - count(deleted_at), count(deleted_at) FROM source_deletions"
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def rows(self, servers: Sequence[str] = ()) -> Iterator[tuple]:
        """(input_file, basename, url, server, *EXTRA_COLUMNS) of every row (of ``servers``), by server and file."""
        have = columns(self.db, "synced_files")
        extra = ", ".join(c if c in have else "NULL" for c in EXTRA_COLUMNS)
        sql = f"SELECT input_file, transported_file_basename, url, server, {extra} FROM synced_files"
        if servers:
            sql += f" WHERE server IN ({', '.join('?' * len(servers))})"
        yield from self.db.execute(sql + " ORDER BY server, input_file", list(servers))

    def deleted_by_us(self) -> set[str | bytes]:
        """The files fc-record deleted at the source after sync."""
        sql = "SELECT input_file FROM source_deletions WHERE deleted_at IS NOT NULL"
        return {k for (k,) in self._rows("source_deletions", sql)}

    def deletion_mark(self, input_file: str | bytes) -> tuple[float | None, str | None] | None:
        return deletion_mark(self.db, input_file)

    def url(self, input_file: str | bytes, server: str) -> tuple[str, str | bytes] | None:
        """(url, transported base name) of the file on ``server``: the CSS URL updater's lookup."""
        return self.db.execute(
            "SELECT url, transported_file_basename FROM synced_files WHERE input_file = ? AND server = ?",
            (input_file, server),
        ).fetchone()

    def remote(self, input_file: str | bytes, server: str) -> bytes | None:
        """The name the file was uploaded under on ``server`` (model.remote_name), None when not recorded."""
        have = columns(self.db, "synced_files") if self.has_synced() else set()
        if not have:
            return None
        cols = ", ".join(c if c in have else "NULL" for c in ("remote", "rel", "transported_file_basename"))
        sql = f"SELECT {cols} FROM synced_files WHERE input_file = ? AND server = ?"
        rows = self._rows("synced_files", sql, (input_file, server))
        return remote_name(*rows[0]) if rows else None
