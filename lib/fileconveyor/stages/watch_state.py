"""fc-watch's state file: what each source tree looked like when it was last seen.

One row per regular file: (source, key, size, mtime_ns, ino), key being the
relative path with "/" replaced by NUL (see watchers/tree.py), so a range query
returns a subtree in walk order.  Nothing is held in memory but the writes not yet
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
    CREATE TABLE sources(name TEXT PRIMARY KEY, root BLOB NOT NULL);
    CREATE TABLE files(
        source TEXT NOT NULL,
        key BLOB NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        PRIMARY KEY (source, key)
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
        self._overlay: dict[tuple[str, bytes], FileStat | None] = {}
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._last_commit = time.monotonic()

    # -- sources -------------------------------------------------------------------

    def bind_source(self, name: str, root: bytes) -> bytes | None:
        """Record the root of source ``name``.  When the name was bound to another root
        before, that tree's rows are dropped and the old root is returned."""
        row = self.db.execute("SELECT root FROM sources WHERE name=?", (name,)).fetchone()
        if row is not None and bytes(row[0]) == root:
            return None
        with self.state.transaction() as db:
            if row is not None:
                db.execute("DELETE FROM files WHERE source=?", (name,))
            db.execute("INSERT OR REPLACE INTO sources(name, root) VALUES(?, ?)", (name, root))
        return bytes(row[0]) if row is not None else None

    # -- rows ----------------------------------------------------------------------

    def lookup(self, source: str, key: bytes) -> FileStat | None:
        k = (source, key)
        if k in self._overlay:
            return self._overlay[k]
        row = self.db.execute(
            "SELECT size, mtime_ns, ino FROM files WHERE source=? AND key=?", (source, key)
        ).fetchone()
        return FileStat(*row) if row else None

    def put(self, source: str, key: bytes, st: FileStat | None) -> None:
        """Record (or, with None, forget) a file.  Call after its event is written."""
        self._overlay[(source, key)] = st

    def count(self, source: str | None = None) -> int:
        if source is None:
            return self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM files WHERE source=?", (source,)).fetchone()[0]

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
        ups = [(s, k, st.size, st.mtime_ns, st.ino) for (s, k), st in self._overlay.items() if st is not None]
        dels = [(s, k) for (s, k), st in self._overlay.items() if st is None]
        with self.state.transaction() as db:
            if ups:
                db.executemany("INSERT OR REPLACE INTO files(source, key, size, mtime_ns, ino) VALUES(?,?,?,?,?)", ups)
            if dels:
                db.executemany("DELETE FROM files WHERE source=? AND key=?", dels)
        self._overlay.clear()

    def close(self) -> None:
        self.state.close()


def read_rows(path: Path, source: str, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, int, int, int]]:
    """Committed rows of ``source`` with lo <= key < hi (hi None: no bound), in key order.

    Read on a connection of its own (also from a scan worker process): it sees one
    snapshot for the whole scan while the stage keeps committing on its own.
    """
    reader = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        reader.execute("PRAGMA busy_timeout=30000")
        if hi is None:
            sql, args = "key>=?", (source, lo)
        else:
            sql, args = "key>=? AND key<?", (source, lo, hi)
        cur = reader.execute(f"SELECT key, size, mtime_ns, ino FROM files WHERE source=? AND {sql} ORDER BY key", args)
        while True:
            batch = cur.fetchmany(4096)
            if not batch:
                break
            yield from batch
    finally:
        reader.close()
