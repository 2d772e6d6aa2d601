"""fc-watch's state file: what each source tree looked like when it was last seen.

One row per regular file: (key, size, mtime_ns, ino).  The key is the source's
4-byte id followed by the relative path with "/" replaced by NUL (see
watchers/tree.py), so a range query returns a subtree in walk order; one BLOB
key (rather than a (source, path) pair) makes inserts a third cheaper, which
counts on a first scan of a million files.  Nothing is held in memory but the writes not yet
committed, which is what keeps fc-watch's memory flat however large the tree.

Order of work, for kill -9 at any moment (docs/durability.md): a batch of rows is
committed first, stamped with the batch's number, and only then are its event
lines written; the next commit records that batch as written.  A file deleted
leaves a tombstone row until its line is out.  On start, the rows of a batch not
recorded as written are replayed: the very same lines (same ids) go out again.
So a line is never lost and a deletion is never forgotten, even when the file
was created, reported, and deleted again around a crash.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..events import FileEventEncoder, FileStat
from ..state import State

CREATED, MODIFIED, DELETED = b"cmd"  # kinds, as stored
KIND_NAMES = {CREATED: "created", MODIFIED: "modified", DELETED: "deleted"}
Row = tuple[int, int, int, int]  # size, mtime_ns, ino, kind

MIGRATIONS = [
    """
    CREATE TABLE sources(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, root BLOB NOT NULL);
    CREATE TABLE files(
        key BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        kind INTEGER NOT NULL,  -- of the last event: ord("c"), ord("m"), or ord("d") for a tombstone
        batch INTEGER NOT NULL  -- the commit that wrote the row
    ) WITHOUT ROWID;
    CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('last_batch', 0), ('written_batch', 0);
    """,
]


class WatchState:
    """Rows of the state file plus an overlay of writes not committed yet."""

    def __init__(
        self,
        path: Path,
        commit_every: int = 4096,
        commit_interval: float = 0.5,
        after_commit: Callable[[], None] | None = None,
    ):
        self.state = State(path, MIGRATIONS)
        # Called right after each commit: write out the event lines of the rows just
        # committed.  Rows first, lines second; see the module docstring.
        self.after_commit = after_commit
        self.db = self.state.db
        self.path = path
        self._overlay: dict[bytes, Row] = {}  # full key -> row not committed yet
        self._tombstones: list[bytes] = []  # deleted keys whose rows can go once written
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._last_commit = time.monotonic()
        meta = dict(self.db.execute("SELECT name, value FROM meta"))
        self.batch = meta["last_batch"]
        self.written = meta["written_batch"]

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
                db.execute("DELETE FROM files WHERE key>=? AND key<?", (lo, hi))  # tombstones too
                db.execute("UPDATE sources SET root=? WHERE id=?", (root, sid))
        return prefix_of(sid), (bytes(row[1]) if row is not None else None)

    # -- rows ----------------------------------------------------------------------

    def lookup(self, prefix: bytes, key: bytes) -> FileStat | None:
        """The file as last reported, None when it is not known (or reported deleted)."""
        k = prefix + key
        row = self._overlay.get(k)
        if row is None:
            row = self.db.execute("SELECT size, mtime_ns, ino, kind FROM files WHERE key=?", (k,)).fetchone()
        return None if row is None or row[3] == DELETED else FileStat(*row[:3])

    def put(self, prefix: bytes, key: bytes, st: tuple[int, int, int], kind: int) -> None:
        """Record the event of ``kind`` about to be written for a file; for a deletion,
        ``st`` is what the file was (it keeps the event's id reproducible)."""
        self._overlay[prefix + key] = (*st, kind)

    def put_many(self, prefix: bytes, keys: list[bytes], rows: list[Row]) -> None:
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
        """Commit the pending rows as the next batch, then have their lines written."""
        self._last_commit = time.monotonic()
        if not self._overlay:
            return
        batch = self.batch + 1
        rows = [(k, *row, batch) for k, row in self._overlay.items()]
        gone = [k for k, row in self._overlay.items() if row[3] == DELETED]
        with self.state.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?)", rows)
            self._mark_written(db)
            db.execute("UPDATE meta SET value=? WHERE name='last_batch'", (batch,))
        self.batch = batch
        self._overlay.clear()
        if self.after_commit is not None:
            self.after_commit()
        self.written = batch  # recorded by the next transaction (or close)
        self._tombstones.extend(gone)

    def _mark_written(self, db: sqlite3.Connection) -> None:
        """Record the batches whose lines are out, and drop their tombstones."""
        db.execute("UPDATE meta SET value=? WHERE name='written_batch'", (self.written,))
        if self._tombstones:
            db.executemany(
                "DELETE FROM files WHERE key=? AND kind=? AND batch<=?",
                [(k, DELETED, self.written) for k in self._tombstones],
            )
            self._tombstones.clear()

    def replay(self, write: Callable[[bytes], None], flush: Callable[[], None]) -> int:
        """After a crash: write again the lines of every batch not recorded as written
        (same events, same ids, in key order), then record them.  Returns how many."""
        if self.written >= self.batch:
            return 0
        sources = {prefix_of(i): (name, bytes(root)) for i, name, root in self.db.execute("SELECT * FROM sources")}
        encoders: dict[bytes, FileEventEncoder] = {}
        n = 0
        # A full scan, but only after a crash: no index on batch keeps inserts cheap.
        rows = self.db.execute("SELECT * FROM files WHERE batch>? ORDER BY key", (self.written,))
        for key, size, mtime_ns, ino, kind, _batch in rows:
            prefix, rel_key = key[:4], key[4:]
            if prefix not in sources:
                continue
            encode = encoders.get(prefix)
            if encode is None:
                encode = encoders[prefix] = FileEventEncoder(*sources[prefix], "replay")
            if kind == DELETED:
                self._tombstones.append(key)
            write(encode(KIND_NAMES[kind], rel_key.replace(b"\0", b"/"), size, mtime_ns, ino))
            n += 1
        flush()
        self.written = self.batch
        with self.state.transaction() as db:
            self._mark_written(db)
        return n

    def close(self) -> None:
        if self.state.db is not None:
            try:
                with self.state.transaction() as db:
                    self._mark_written(db)
            except Exception:  # closing after a failure: the next start replays instead
                pass
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
    sql = "SELECT key, size, mtime_ns, ino, kind FROM files WHERE key>? AND key<? ORDER BY key LIMIT 4096"
    reader = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        reader.execute("PRAGMA busy_timeout=30000")
        page = reader.execute(sql.replace("key>?", "key>=?"), (prefix + lo, end)).fetchall()
        while page:
            for key, size, mtime_ns, ino, kind in page:
                if kind != DELETED:  # a tombstone is a file known to be gone
                    yield key[n:], size, mtime_ns, ino
            page = reader.execute(sql, (page[-1][0], end)).fetchall()
    finally:
        reader.close()
