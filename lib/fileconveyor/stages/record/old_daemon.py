"""Switching from the old daemon: import its synced_files.db, and turn its persistent_data.db queues into events.

synced_files.db: the seed's table ``synced_files(input_file, transported_file_basename, url, server)``; its rows
are copied into fc-record's database (rows fc-record already has win), so nothing is uploaded again.

persistent_data.db: tables ``pipeline_queue`` (files waiting), ``pipeline_list`` (files in the pipeline when the
daemon stopped) and ``failed_files_list`` (files to retry), each ``(id, item pickle[, key])`` where ``item`` is a
pickled ``(path, event)`` tuple, event 1 = created, 2 = modified, 4 = deleted.  Those are the changes the daemon
had not synced yet: they become events for the pipeline.  ``files_to_delete_list`` is not imported: the old
daemon scheduled the files of every rule there (its data-loss bug), so its schedule cannot be trusted.

A pickle can run any code when it is loaded.  These are read with an unpickler that refuses every class and
function (``find_class``) and persistent id, so only the plain values a pickle encodes by itself (tuples, strings,
numbers) can come out; the result must then be a (path, event) tuple, or the item is refused and reported.
"""

from __future__ import annotations

import functools
import io
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ... import events as E
from ...errors import ConfigError
from ...records import Record, Synced, columns, db_key, has_table, open_readonly
from ...roots import Source, find_source
from ...watchers.links import OUTSIDE, UNKNOWN, Skipped, resolve

OLD_KINDS = {1: "created", 2: "modified", 4: "deleted"}
QUEUE_TABLES = ("pipeline_list", "pipeline_queue", "failed_files_list")  # in flight first, as the daemon did
MAX_ITEM = 1 << 20  # bytes; a (path, event) tuple is a few hundred


class RefusedPickle(ValueError):
    """An item that is not a plain (path, event) tuple."""


@functools.cache
def _plain_unpickler() -> type:
    """The Unpickler class that refuses classes and persistent ids.  Made on first use: pickle (0.5 MB) is for
    --import alone, and fc-transport and fc-record import this module for ``Source`` on every run."""
    import pickle

    class PlainUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            raise RefusedPickle(f"it asks for {module}.{name}; only plain tuples, strings and numbers are accepted")

        def persistent_load(self, pid: object) -> object:
            raise RefusedPickle("it uses a persistent id; only plain tuples, strings and numbers are accepted")

    return PlainUnpickler


def load_item(data: bytes) -> tuple[bytes, int]:
    """(path, event) from one pickled item, never running code from it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RefusedPickle("not a pickle (the column holds no bytes)")
    if len(data) > MAX_ITEM:
        raise RefusedPickle(f"{len(data)} bytes is too large for a (path, event) tuple")
    try:
        # encoding="bytes": a Python 2 str (what the daemon pickled for a path) comes back as its exact bytes
        value = _plain_unpickler()(io.BytesIO(bytes(data)), encoding="bytes").load()
    except RefusedPickle:
        raise
    except Exception as exc:  # truncated or garbled data: refused like any other bad item
        raise RefusedPickle(f"not a valid pickle: {exc}") from None
    if not (isinstance(value, tuple) and len(value) == 2):
        raise RefusedPickle(f"expected a (path, event) tuple, got {type(value).__name__}")
    path, event = value
    if isinstance(path, str):
        path = path.encode("utf-8", "surrogateescape")
    if not isinstance(path, bytes) or not path.startswith(b"/") or b"\0" in path:
        raise RefusedPickle("the path is not an absolute file name")
    if type(event) is not int:
        raise RefusedPickle(f"the event is {type(event).__name__}, not a number")
    return path, event


# -- synced_files.db ---------------------------------------------------------------------------


@dataclass
class ImportCounts:
    imported: int = 0
    kept: int = 0  # rows fc-record had already: left as they are
    per_server: dict[str, int] = field(default_factory=dict)


def import_synced(old_path: str, rec: Record, sources: Sequence[Source]) -> ImportCounts:
    old = open_readonly(old_path)
    old.text_factory = bytes  # the daemon stored Python 2 str: take the exact bytes
    try:
        if not has_table(old, "synced_files"):
            raise ConfigError(f"{old_path}: no synced_files table; is it File Conveyor's synced_files.db?")
        rows = old.execute("SELECT input_file, transported_file_basename, url, server FROM synced_files").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{old_path}: {exc}") from None
    finally:
        old.close()
    counts = ImportCounts()
    with rec.tx():
        for input_file, basename, url, server in rows:
            if input_file is None or server is None:
                continue
            path = _raw(input_file)
            srv = _raw(server).decode("utf-8", "replace")
            found = find_source(sources, path)
            source, rel = (found[0].name, db_key(found[1])) if found else (None, None)
            root = db_key(found[0].root) if found else None
            row = Synced(
                db_key(path),
                db_key(_raw(basename or b"")),
                _raw(url or b"").decode("utf-8", "replace"),
                srv,
                source=source,
                root=root,
                rel=rel,
            )
            if rec.import_row(row):
                counts.imported += 1
                counts.per_server[srv] = counts.per_server.get(srv, 0) + 1
            else:
                counts.kept += 1
    return counts


def _raw(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


# -- persistent_data.db ------------------------------------------------------------------------


@dataclass
class QueueCounts:
    events: int = 0
    refused: list[str] = field(default_factory=list)
    outside: int = 0  # paths under no --source
    unknown_event: int = 0
    not_imported: dict[str, int] = field(default_factory=dict)


def read_queues(old_path: str, counts: QueueCounts) -> Iterator[tuple[bytes, int]]:
    """Every (path, event) of the daemon's queues, in the order it would have taken them."""
    old = open_readonly(old_path)
    try:
        for table in QUEUE_TABLES:
            if not has_table(old, table):
                continue
            if "item" not in columns(old, table):
                raise ConfigError(f"{old_path}: table {table} has no item column")
            for rid, data in old.execute(f"SELECT id, item FROM {table} ORDER BY id"):
                try:
                    yield load_item(data)
                except RefusedPickle as exc:
                    counts.refused.append(f"{table} row {rid}: {exc}")
        for table in ("files_to_delete_list",):
            if has_table(old, table):
                (n,) = old.execute(f"SELECT count(*) FROM {table}").fetchone()
                if n:
                    counts.not_imported[table] = n
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{old_path}: {exc}") from None
    finally:
        old.close()


def queue_events(old_path: str, sources: Sequence[Source], counts: QueueCounts) -> Iterator[dict]:
    """One event per distinct path of the old queues, judged by what is on disk now."""
    seen: dict[bytes, int] = {}
    for path, event in read_queues(old_path, counts):
        if event not in OLD_KINDS and event != 0xFFFFFFFF:  # DELETE_OLD_FILE: the daemon's own housekeeping
            counts.unknown_event += 1
            continue
        if event in OLD_KINDS:
            seen[path] = event  # the last one says what the daemon still had to do; the disk says the rest
    for path, event in seen.items():
        found = find_source(sources, path)
        if found is None:
            counts.outside += 1
            continue
        src, rel = found
        # Judged as fc-watch judges it (watchers/links.py).  A symlink leading outside is not published,
        # and as the old daemon may have published the path, it is reported deleted: no copy stays.
        now = resolve(src.root, rel, follow_symlinks=False)
        if now is None or now == UNKNOWN or isinstance(now, Skipped):
            kind, stat = "deleted", E.FileStat(*now) if isinstance(now, Skipped) else E.FileStat(0, 0, 0)
        else:
            kind = OLD_KINDS[event] if event != 4 else "modified"  # deleted then recreated: it is there now
            stat = E.FileStat(*now)
        counts.events += 1
        ev = E.file_event(kind, src.name, src.root, rel, stat, "import")
        yield E.mark_skipped(ev, OUTSIDE) if isinstance(now, Skipped) else ev
