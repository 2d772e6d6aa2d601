"""The synced-files record: File Conveyor's contract with web applications, in SQLite (a file, the default:
sqlite.py, sqlite_reader.py) or PostgreSQL (a ``postgresql://`` URL, shared by many hosts: postgres.py,
pg_reader.py, pg_connect.py).

fc-record writes it (``open_writer``); fc-verify, fc-transport's and fc-process's ``--record-db`` and
``fc-record --status`` read it (``open_reader``).  Each takes the same target: a path or a URL.  Both keep the
seed's table ``synced_files(input_file, transported_file_basename, url, server)`` with one row per file and server,
plus ``sync_failures``, ``source_deletions`` and ``record_order`` (the order fence: ``claim``).

The writer (``Record``) and the reader (``Reader``) are the whole interface: callers never see a connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from . import model
from .model import EXTRA_COLUMNS, Deletion, Synced, Version, db_key, key_bytes
from .pg_connect import is_url
from .pg_connect import shown as _shown_url
from .sqlite import MIGRATIONS, Records, columns, has_table, open_readonly
from .sqlite_reader import SqliteReader

__all__ = [
    "EXTRA_COLUMNS",
    "MIGRATIONS",
    "Deletion",
    "Reader",
    "Record",
    "Records",
    "Synced",
    "Version",
    "columns",
    "db_key",
    "deleted_by_record",
    "exists",
    "has_table",
    "is_url",
    "key_bytes",
    "locate",
    "open_reader",
    "open_readonly",
    "open_writer",
    "shown",
]


class Record(Protocol):
    """fc-record's writer: ``item`` per event inside one transaction per round (``commit``), ``tx`` alone."""

    name: str

    def item(self, alone: bool = False) -> AbstractContextManager[Any]: ...
    def tx(self) -> AbstractContextManager[Any]: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...
    def may_hold(self, table: str) -> bool: ...
    def plain(self) -> bool: ...
    def upsert_rows(self, rows: Sequence[tuple]) -> list[tuple[int, Exception]]: ...
    def added(self, table: str) -> None: ...
    def claim(self, input_file: str | bytes, server: str, order: int, limit: int) -> bool: ...
    def upsert(self, s: Synced, now: float | None = None, failures: bool = True) -> None: ...
    def remove(self, input_file: str | bytes, server: str) -> None: ...
    def fail(self, input_file: str | bytes, server: str, fields: Mapping[str, Any]) -> None: ...
    def import_row(self, s: Synced) -> bool: ...
    def versions(self, input_file: str | bytes) -> dict[str, Version]: ...
    def deletion(self, input_file: str | bytes) -> Deletion | None: ...
    def put_deletion(self, d: Deletion) -> None: ...
    def drop_deletion(self, input_file: str | bytes, version: Version | None = None) -> None: ...
    def owned(self, owner: str) -> list[tuple[str | bytes, float, float | None]]: ...
    def scheduled(self, owner: str) -> int: ...
    def deletion_mark(self, input_file: str | bytes) -> tuple[float | None, str | None] | None: ...


class Reader(Protocol):
    """Read-only lookups: what every reader of the record needs, and no more."""

    name: str

    def close(self) -> None: ...
    def has_synced(self) -> bool: ...
    def count(self) -> int: ...
    def synced_by_server(self) -> dict[str, int]: ...
    def failed_by_server(self) -> dict[str, int]: ...
    def deletions(self) -> tuple[int, int]: ...
    def rows(self, servers: Sequence[str] = ()) -> Iterator[tuple]: ...
    def deleted_by_us(self) -> set[str | bytes]: ...
    def deletion_mark(self, input_file: str | bytes) -> tuple[float | None, str | None] | None: ...
    def url(self, input_file: str | bytes, server: str) -> tuple[str, str | bytes] | None: ...
    def remote(self, input_file: str | bytes, server: str) -> bytes | None: ...


def locate(target: str) -> str:
    """The target as the same record everywhere: a URL as given, a path made absolute."""
    return target if is_url(target) else os.path.abspath(target)


def shown(target: str) -> str:
    """The target as messages may print it: a URL without its password."""
    return _shown_url(target) if is_url(target) else target


def exists(target: str) -> bool:
    """Whether there may be a record to read: a URL always (asked when read), a file when it is there."""
    return is_url(target) or os.path.exists(target)


def open_writer(target: str) -> Record:
    if is_url(target):
        from .postgres import PgRecord

        return PgRecord(target)
    return Records(target)


def open_reader(target: str) -> Reader:
    if is_url(target):
        from .pg_reader import PgReader

        return PgReader(target)
    return SqliteReader(target)


def deleted_by_record(source: Any, event: Mapping[str, Any]) -> bool:
    """Whether a ``deleted`` event reports a deletion fc-record made after sync (model.deleted_by_record), asked
    of a Reader or Record (or, for older callers, a sqlite3 connection)."""
    from .. import events as E

    if event.get("kind") != "deleted":
        return False
    key = db_key(E.get_path(dict(event), "path"))
    if hasattr(source, "deletion_mark"):
        mark = source.deletion_mark(key)
    else:
        from .sqlite import deletion_mark

        mark = deletion_mark(source, key)
    return model.deleted_by_record(mark, event)
