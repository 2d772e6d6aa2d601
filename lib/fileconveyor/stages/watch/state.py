"""fc-watch's state file: what each source tree looked like when it was last seen.

One row per regular file: (key, size, mtime_ns, ino), and per symlink that is not
published (watchers/links.py: the link's own lstat, kind SKIPPED or SKIPPED_GONE,
so a rescan says nothing more about the same link).  The key is the source's
4-byte id followed by the relative path with "/" replaced by NUL (see
watchers/tree.py), so a range query returns a subtree in walk order; one BLOB
key (rather than a (source, path) pair) makes inserts a third cheaper, which
counts on a first scan of a million files.  Nothing is held in memory but the writes not yet
committed, which is what keeps fc-watch's memory flat however large the tree.

Order of work, for kill -9 at any moment (docs/durability.md): a batch of rows is
committed first, each row stamped with the sequence number of its event line
(the ``batch`` column; the line's ``hop.seq``), and only then are the lines
written; the next commit records how far lines are written.  A file deleted
leaves a tombstone row until every reader has acknowledged its line.  On start,
and when a reader process restarts, the rows after what the readers acknowledged
(or, with no File Conveyor reader, after what was written) are replayed: the very
same lines (same ids, same seq) go out again, and readers drop what they had.
So a line is never lost and a deletion is never forgotten, even when the file
was created, reported, and deleted again around a crash.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ...delivery import ack_check, acks, runs
from ...delivery.durable import hop_prefix, with_hop
from ...delivery.sending import Sender
from ...delivery.writer import Writer
from ...events import FileEventEncoder
from ...state import Migration, State
from ...watchers.links import OUTSIDE

CREATED, MODIFIED, DELETED = b"cmd"  # kinds, as stored
# A symlink leading outside (watchers/links.py), with the link's own metadata: reported
# as skipped (a created event with error), or, where a published file was, as deleted.
SKIPPED, SKIPPED_GONE = b"sx"
KIND_NAMES = {CREATED: "created", MODIFIED: "modified", DELETED: "deleted", SKIPPED: "created", SKIPPED_GONE: "deleted"}
Row = tuple[int, int, int, int]  # size, mtime_ns, ino, kind
Pending = tuple[int, int, int, int, bytes]  # a row and its event line, not committed yet
SESSION_CHECK = 0.5  # seconds between looks for restarted readers


def _hops(db: sqlite3.Connection) -> None:
    """Hop acknowledgements from readers (docs/durability.md); from here on, "batch" numbers are per line: the
    hop.seq of the row's last event."""
    acks.migrate(db)
    db.execute("INSERT INTO meta VALUES ('epoch', abs(random()) % 9007199254740991), ('tombstones', 0)")


MIGRATIONS: list[Migration] = [
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
    _hops,
    acks.migrate,  # acks.through: end-to-end acknowledgements (delivery/through.py)
]


class WatchState:
    """Rows of the state file plus an overlay of writes not committed yet."""

    def __init__(
        self, path: Path, writer: Writer | None = None, commit_every: int = 1024, commit_interval: float = 0.5
    ):
        self.state = State(Path(path).absolute(), MIGRATIONS)
        self.db = self.state.db
        self.path = path
        self._overlay: dict[bytes, Pending] = {}  # full key -> row and line, not committed yet
        self._tombstones: list[tuple[bytes, int]] = []  # deleted keys (and seq) whose rows can go once acknowledged
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._last_commit = time.monotonic()
        meta = dict(self.db.execute("SELECT name, value FROM meta"))
        self.batch = meta["last_batch"]  # the last seq given to a line
        self.epoch = format(meta["epoch"], "x")
        # Writes the event lines of the rows just committed, right after each commit: rows first, lines second
        # (see the module docstring).  None: a state opened only to be read or made.  Its ``last`` is how far
        # lines are written; the file's written_batch, how far they are delivered (Sender.delivered).
        self.out = Sender(writer, self.db, self.epoch, meta["written_batch"])
        self._hop_tag: list[str] | None = None
        self._hop = hop_prefix(str(self.state.path), self.epoch)
        self._next_session_check = time.monotonic() + SESSION_CHECK
        # where our lines go: a reader may ask it of our state file after we ended (ack_check.writes_into)
        self._where = ack_check.output_ident(writer.output.path, writer.output.stdout) if writer is not None else None
        with self.state.transaction() as db:  # before any line of this run is written (delivery/runs.py)
            self._set_meta(db, runs.current(self.batch, self._where))
            # A reader silent for READER_EXPIRY is not forgotten here (only by --forget-reader): its row keeps the
            # deletions it has not acknowledged (_floor).  Nothing is re-sent to it at our start (acks.sessions).
        if meta["tombstones"]:
            self._drop_acknowledged_tombstones()

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

    def lookup(self, prefix: bytes, key: bytes) -> Row | None:
        """The file as last reported (size, mtime_ns, ino, kind), None when it is not
        known (or reported deleted)."""
        k = prefix + key
        row = self._overlay.get(k)
        if row is None:
            row = self.db.execute("SELECT size, mtime_ns, ino, kind FROM files WHERE key=?", (k,)).fetchone()
        return None if row is None or row[3] == DELETED else (row[0], row[1], row[2], row[3])

    def put(self, prefix: bytes, key: bytes, st: tuple[int, int, int], kind: int, line: bytes) -> None:
        """Record the event of ``kind`` (its encoded ``line``) for a file; for a deletion,
        ``st`` is what the file was (it keeps the event's id reproducible).  A second
        event for the same file before the commit replaces the first: events say
        what a file is now, not what happened to it."""
        self._overlay[prefix + key] = (*st, kind, line)

    def put_many(self, prefix: bytes, keys: list[bytes], rows: list[Row], lines: list[bytes]) -> None:
        self._overlay.update((prefix + k, (*row, line)) for k, row, line in zip(keys, rows, lines, strict=True))

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]

    def any_below(self, prefix: bytes, lo: bytes, hi: bytes | None) -> bool:
        """Whether a committed row of a file (not a tombstone) has a key in [lo, hi) (see
        tree.subtree_range): one index lookup."""
        end = prefix_of(int.from_bytes(prefix, "big") + 1) if hi is None else prefix + hi
        sql = "SELECT 1 FROM files WHERE key>=? AND key<? AND kind!=? LIMIT 1"
        return self.db.execute(sql, (prefix + lo, end, DELETED)).fetchone() is not None

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
        """Commit the pending rows, each with the seq of its line, then have the lines written."""
        self._last_commit = time.monotonic()
        if not self._overlay:
            return
        first = self.batch + 1
        rows, lines, gone = [], [], []
        for seq, (k, (size, mtime_ns, ino, kind, line)) in enumerate(self._overlay.items(), first):
            rows.append((k, size, mtime_ns, ino, kind, seq))
            lines.append(with_hop(line, self._hop, seq))
            if kind == DELETED:
                gone.append((k, seq))
        last = first + len(rows) - 1
        with self.state.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?)", rows)
            self._mark_written(db)
            db.execute("UPDATE meta SET value=? WHERE name='last_batch'", (last,))
        self.batch = last
        self._overlay.clear()
        self.out.write(lines, [r[5] for r in rows])
        self.out.last = last  # recorded by the next transaction (or close)
        self._tombstones.extend(gone)
        self.check_readers()

    def _floor(self) -> int:
        """Lines up to here are safe with every reader (or delivered, with no File Conveyor reader)."""
        out = self.out
        acked = out.readers()
        if acked:
            floor = min([*acked.values(), out.delivered()])
        else:
            # into a pipe, the run's tombstones stay until its end: a reader quitting early undoes the whole run
            floor = min(out.run_start, out.last) if out.tail.active else out.last
        # A reader silent for READER_EXPIRY still counts here, until it is forgotten (--forget-reader): a cron job
        # run less often than that, its last run interrupted, got its new files at its next run (their rows are
        # replayed after its marks) but never the deletions, whose tombstones had gone (their copies stayed).
        silent = acks.lowest_silent(self.db, self.epoch)
        return floor if silent is None else min(floor, silent)

    def _mark_written(self, db: sqlite3.Connection) -> None:
        """Record how far lines are delivered, and drop the tombstones every reader has."""
        db.execute("UPDATE meta SET value=? WHERE name='written_batch'", (self.out.delivered(),))
        if self._tombstones:
            floor = self._floor()
            done = [(k, DELETED, seq) for k, seq in self._tombstones if seq <= floor]
            if done:
                db.executemany("DELETE FROM files WHERE key=? AND kind=? AND batch=?", done)
                self._tombstones = [t for t in self._tombstones if t[1] > floor]
        db.execute("UPDATE meta SET value=? WHERE name='tombstones'", (len(self._tombstones),))

    def _drop_acknowledged_tombstones(self) -> None:
        """Tombstones left by the last run: a full scan, only when some were left."""
        with self.state.transaction() as db:
            db.execute("DELETE FROM files WHERE kind=? AND batch<=?", (DELETED, self._floor()))
            db.execute("UPDATE meta SET value=0 WHERE name='tombstones'")

    def replay(self, after: int | None = None) -> int:
        """Write again the lines of the rows after ``after`` (default: after what every
        reader acknowledged, or after what was written when no File Conveyor reader is
        known): same events, same ids, same seq, ``"via":"replay"``.  Returns how many."""
        if after is None:
            due = self.out.replays.due()
            after = self.out.last if due is None else due
        self._retag()
        if after >= self.batch:
            return 0
        lines: list[bytes] = []
        seqs: list[int] = []
        n = 0
        for seq, line, key, kind in self._lines_after(after):
            if kind == DELETED:
                self._tombstones.append((key, seq))
            lines.append(line)
            n += 1
            seqs.append(seq)
            if len(lines) >= 4096:
                self.out.write(lines, seqs)
                lines, seqs = [], []
        self.out.write(lines, seqs)
        self.out.last = self.batch
        with self.state.transaction() as db:
            self._mark_written(db)
        return n

    def _lines_after(self, after: int) -> Iterator[tuple[int, bytes, bytes, int]]:
        """The lines of the committed rows after seq ``after``, in seq order: (seq, line, key, kind)."""
        sources = {prefix_of(i): (name, bytes(root)) for i, name, root in self.db.execute("SELECT * FROM sources")}
        encoders: dict[bytes, FileEventEncoder] = {}
        # A full scan, but only after a crash or a reader's restart: no index on batch keeps inserts cheap.
        rows = self.db.execute("SELECT * FROM files WHERE batch>? ORDER BY batch", (after,))
        for key, size, mtime_ns, ino, kind, seq in rows:
            prefix, rel_key = key[:4], key[4:]
            if prefix not in sources:
                continue
            encode = encoders.get(prefix)
            if encode is None:
                encode = encoders[prefix] = FileEventEncoder(*sources[prefix], "replay")
            line = encode_row(encode, kind, rel_key.replace(b"\0", b"/"), size, mtime_ns, ino)
            yield seq, with_hop(line, self._hop, seq), key, kind

    def resend(self) -> Iterator[bytes] | None:
        """What the next reader of our --output FIFO gets when the last one went away: the lines after what our
        File Conveyor readers acknowledged (None, with no such reader: the block being written again).  The
        FIFO's reader may be fc-tee, whose readers stay the same processes and so never register again: what
        the dead fc-tee had read and not passed on, and what it left in our pipe (gone with our old end), must
        come again from here, before any newer line moves their marks past it."""
        acked = self.out.readers()
        if not acked:
            return None
        return (line for _, line, _, _ in self._lines_after(min(acked.values())))

    def check_readers(self) -> int:
        """A reader is new or restarted while we run: re-send what it had not acknowledged
        (the lines the old process held in memory died with it).  Returns how many."""
        now = time.monotonic()
        if now < self._next_session_check:
            return 0
        self._next_session_check = now + SESSION_CHECK
        after = self.out.replays.due()
        self._retag()
        return self.replay(after) if after is not None else 0

    def _retag(self) -> None:
        """Lines carry hop.for for a while after a replay (see acks.Replays)."""
        if self.out.tag != self._hop_tag:
            self._hop_tag = self.out.tag
            self._hop = hop_prefix(str(self.state.path), self.epoch, self._hop_tag)

    def settle_output(self, timeout: float, should_stop: Callable[[], bool]) -> bool:
        """At the end of our output into a pipe no File Conveyor reader has acknowledged: wait (at most
        ``timeout`` s) until its reader has read it or gone.  False when the reader left before our end: this
        run's lines are not delivered, and the next run sends them again."""
        if not self.out.must_settle():
            return True
        got = self.out.wait_read(timeout, should_stop)
        with self.state.transaction() as db:
            self._mark_written(db)
        return got != "gone"

    def close(self) -> None:
        if self.state.db is not None:
            try:
                # where our lines went on, said before we let go of the file (our stdout stays open until our
                # exit, tee's outputs after it): our readers behind tee know us by it (runs.ending)
                ending = runs.ending(self._where)  # a scan of /proc: not inside the transaction
                with self.state.transaction() as db:
                    self._mark_written(db)
                    self._set_meta(db, ending)
            except Exception:  # closing after a failure: the next start replays instead
                pass
            else:
                if self.out.writer is not None:
                    # our reader sees our end now, not after the file is closed and the interpreter has finished
                    self.out.writer.output.release()
        self.state.close()

    @staticmethod
    def _set_meta(db: sqlite3.Connection, items: dict[str, str | int]) -> None:
        db.executemany(
            "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            items.items(),
        )


def judge(old: int | None, same: bool, skipped: bool) -> int | None:
    """The kind to report for a path whose last row is of kind ``old`` (None: none) and
    which is now a file (``skipped``: a symlink leading outside); ``same``: its
    metadata equals the row's.  None: nothing to report."""
    if skipped:
        if old in (SKIPPED, SKIPPED_GONE):
            return None if same else SKIPPED  # the same link: said once, not on every rescan
        return SKIPPED if old is None else SKIPPED_GONE  # a published file is no more: its copies go
    if old is None or old in (SKIPPED, SKIPPED_GONE):
        return CREATED  # never published before
    return None if same else MODIFIED


def encode_row(encode: FileEventEncoder, kind: int, rel: bytes, size: int, mtime_ns: int, ino: int) -> bytes:
    """The event line of a row of ``kind``."""
    if kind in (SKIPPED, SKIPPED_GONE):
        return encode.skipped(KIND_NAMES[kind], rel, size, mtime_ns, ino, OUTSIDE)
    return encode(KIND_NAMES[kind], rel, size, mtime_ns, ino)


def prefix_of(source_id: int) -> bytes:
    return source_id.to_bytes(4, "big")


def read_rows(path: Path, prefix: bytes, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, int, int, int, int]]:
    """Committed rows (key, size, mtime_ns, ino, kind) of the source with key ``prefix``
    and lo <= key < hi (hi None: no bound), in key order, keys without the prefix.

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
                    yield key[n:], size, mtime_ns, ino, kind
            page = reader.execute(sql, (page[-1][0], end)).fetchall()
    finally:
        reader.close()
