"""fc-watch's state file: what each source tree looked like when it was last seen.

One row per regular file: (key, size, mtime_ns, ino).  The key is the source's
4-byte id followed by the relative path with "/" replaced by NUL (see
watchers/tree.py), so a range query returns a subtree in walk order; one BLOB
key (rather than a (source, path) pair) makes inserts a third cheaper, which
counts on a first scan of a million files.  Nothing is held in memory but the writes not yet
committed, which is what keeps fc-watch's memory flat however large the tree.

Order of work, for kill -9 at any moment: an event is written to stdout first and
its row committed after.  A crash in between re-emits the change on restart (the
same change, with the same id); it never loses one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..events import FileStat
from ..state import State

MIGRATIONS = [
    """
    CREATE TABLE sources(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, root BLOB NOT NULL);
    CREATE TABLE files(
        key BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
]


class WatchState:
    """Rows of the state file plus an overlay of writes not committed yet."""

    def __init__(
        self,
        path: Path,
        commit_every: int = 4096,
        commit_interval: float = 0.5,
        before_commit: Callable[[], None] | None = None,
    ):
        self.state = State(path, MIGRATIONS)
        # Called first thing in commit(): the events these rows stand for must be
        # out (flushed) before the rows say they were.
        self.before_commit = before_commit
        self.db = self.state.db
        self.path = path
        # full key -> (size, mtime_ns, ino), or None for a row to delete
        self._overlay: dict[bytes, tuple[int, int, int] | None] = {}
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._last_commit = time.monotonic()

    # -- sources -------------------------------------------------------------------

    def bind_source(self, name: str, root: bytes) -> tuple[bytes, bytes | None]:
        """The key prefix of source ``name`` (created on first use), and the root it had
        before when that differs from ``root`` (its rows are then dropped)."""
        row = self.db.execute("SELECT id, root FROM sources WHERE name=?", (name,)).fetchone()
        if row is not None and bytes(row[1]) == root:
            return prefix_of(row[0]), None
        with self.state.transaction() as db:
            if row is None:
                sid = db.execute("INSERT INTO sources(name, root) VALUES(?, ?)", (name, root)).lastrowid
            else:
                sid = row[0]
                lo, hi = prefix_of(sid), prefix_of(sid + 1)
                db.execute("DELETE FROM files WHERE key>=? AND key<?", (lo, hi))
                db.execute("UPDATE sources SET root=? WHERE id=?", (root, sid))
        return prefix_of(sid), (bytes(row[1]) if row is not None else None)

    # -- rows ----------------------------------------------------------------------

    def lookup(self, prefix: bytes, key: bytes) -> FileStat | None:
        k = prefix + key
        if k in self._overlay:
            st = self._overlay[k]
            return None if st is None else FileStat(*st)
        row = self.db.execute("SELECT size, mtime_ns, ino FROM files WHERE key=?", (k,)).fetchone()
        return FileStat(*row) if row else None

    def put(self, prefix: bytes, key: bytes, st: tuple[int, int, int] | None) -> None:
        """Record (or, with None, forget) a file.  Call after its event is written."""
        self._overlay[prefix + key] = st

    def put_many(self, prefix: bytes, keys: list[bytes], rows: list[tuple[int, int, int] | None]) -> None:
        self._overlay.update(zip([prefix + k for k in keys], rows, strict=True))

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]

    # -- committing ----------------------------------------------------------------

    @property
    def dirty(self) -> int:
        return len(self._overlay)

    def maybe_commit(self) -> bool:
        """Commit when enough writes piled up or enough time passed."""
        if not self._overlay:
            return False
        if len(self._overlay) >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()
            return True
        return False

    def commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._overlay:
            return
        if self.before_commit is not None:
            self.before_commit()
        ups = [(k, *st) for k, st in self._overlay.items() if st is not None]
        dels = [(k,) for k, st in self._overlay.items() if st is None]
        with self.state.transaction() as db:
            if ups:
                db.executemany("INSERT OR REPLACE INTO files(key, size, mtime_ns, ino) VALUES(?,?,?,?)", ups)
            if dels:
                db.executemany("DELETE FROM files WHERE key=?", dels)
        self._overlay.clear()

    def close(self) -> None:
        self.state.close()


def prefix_of(source_id: int) -> bytes:
    return source_id.to_bytes(4, "big")


def read_rows(path: Path, prefix: bytes, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, int, int, int]]:
    """Committed rows of the source with key ``prefix`` and lo <= key < hi (hi None:
    no bound), in key order, keys without the prefix.

    Read on a connection of its own (also from a scan worker process), a page at a
    time, each page its own short read transaction: a snapshot held for a whole
    scan would stop SQLite from checkpointing and let the WAL grow without bound
    while the stage commits.  Rows committed meanwhile are for keys the scan has
    passed (its own events) or are newer truth (live hints), so paging is safe.
    """
    n = len(prefix)
    end = prefix_of(int.from_bytes(prefix, "big") + 1) if hi is None else prefix + hi
    sql = "SELECT key, size, mtime_ns, ino FROM files WHERE key>? AND key<? ORDER BY key LIMIT 4096"
    reader = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        reader.execute("PRAGMA busy_timeout=30000")
        page = reader.execute(sql.replace("key>?", "key>=?"), (prefix + lo, end)).fetchall()
        while page:
            for key, size, mtime_ns, ino in page:
                yield key[n:], size, mtime_ns, ino
            page = reader.execute(sql, (page[-1][0], end)).fetchall()
    finally:
        reader.close()
