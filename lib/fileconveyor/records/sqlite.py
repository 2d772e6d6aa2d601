"""The synced-files record in SQLite (the embedded default; postgres.py is the shared one): File Conveyor's
contract with web applications.

fc-record writes it; the Drupal CDN module, fc-process's CSS URL updater, fc-verify, fc-transport (``--record-db``)
and people with ``sqlite3`` read it.  It keeps the seed's table exactly, so existing readers work unchanged::

    CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text);
    CREATE UNIQUE INDEX file_unique_per_server ON synced_files (input_file, server);

and adds columns after those four (readers that name their columns never notice) plus two tables:
``sync_failures`` (the last failure per file and server) and ``source_deletions`` (files fc-record deletes or has
deleted at the source after sync: how fc-transport tells such a deletion from the user's).

``input_file`` is the absolute source path as UTF-8 text, or the raw bytes (a BLOB) for a name that is not UTF-8,
so every file has exactly one row per server and a text lookup finds every text name.

The file is in WAL mode for good: readers never wait for fc-record and fc-record never waits for readers (the
original's "database is locked", issue #149), also while fc-record starts and stops.  WAL is set once in the file's
life (at its creation, or once on an older file: ``Records._wal``), never asked for again, and no connection of
ours closes with a checkpoint or switches it back: a switch, and a close that checkpoints, take the file's
exclusive lock.  Its ``-wal`` (emptied by fc-record's close) and ``-shm`` stay next to it, so a user who may only
read it (the web server's) can open it whether fc-record runs or not (SQLite 3.22 on).  It is not locked to one
writer: two pipelines (two rules) may record into the same file, each write being one short transaction
(fc-record: one per round of events, see ``Records.item``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError, RetryableError
from ..state import keep_wal_at_close, migrate, small_cache, transaction, translate
from .model import Deletion, Synced, Version

SEED_TABLE = (
    "CREATE TABLE IF NOT EXISTS synced_files(input_file text, transported_file_basename text, url text, server text)"
)
SEED_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS file_unique_per_server ON synced_files (input_file, server)"
_SKIPPABLE = ("sync_failures", "source_deletions")  # see Records._empty
# A synced row, inserted or updated (its values: Synced.values)
_UPSERT = (
    "INSERT INTO synced_files(input_file, transported_file_basename, url, server, remote, size, mtime_ns,"
    " ino, remote_size, hash, processed, source, root, rel, event_id, synced_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(input_file, server) DO UPDATE SET"
    " transported_file_basename=excluded.transported_file_basename, url=excluded.url, remote=excluded.remote,"
    " size=excluded.size, mtime_ns=excluded.mtime_ns,"
    " ino=excluded.ino, remote_size=excluded.remote_size, hash=excluded.hash, processed=excluded.processed,"
    " source=excluded.source, root=excluded.root, rel=excluded.rel, event_id=excluded.event_id,"
    " synced_at=excluded.synced_at"
)

# Append-only; PRAGMA user_version counts those applied.  The first one is written with IF NOT EXISTS so that an
# old daemon's synced_files.db (user_version 0, the seed's table and index) can be used as --db directly.
MIGRATIONS = [
    f"""
    {SEED_TABLE};
    {SEED_INDEX};
    -- what the seed did not keep: where the file is on the server, which version of the source was sent
    ALTER TABLE synced_files ADD COLUMN remote TEXT;         -- path under the destination root, '/'-separated
    ALTER TABLE synced_files ADD COLUMN size INTEGER;        -- the source's size when it was synced
    ALTER TABLE synced_files ADD COLUMN mtime_ns INTEGER;    -- the source's mtime (ns) when it was synced
    ALTER TABLE synced_files ADD COLUMN ino INTEGER;         -- the source's inode when it was synced
    ALTER TABLE synced_files ADD COLUMN remote_size INTEGER; -- the size of what was sent, when known
    ALTER TABLE synced_files ADD COLUMN hash TEXT;           -- 'algorithm:hex' of what was sent, when known
    ALTER TABLE synced_files ADD COLUMN processed TEXT;      -- JSON list of the processors that changed it
    ALTER TABLE synced_files ADD COLUMN source TEXT;         -- fc-watch's source name
    ALTER TABLE synced_files ADD COLUMN root;                -- the source root (text, or bytes)
    ALTER TABLE synced_files ADD COLUMN rel;                 -- the path under the root (text, or bytes)
    ALTER TABLE synced_files ADD COLUMN event_id TEXT;       -- id of the event recorded last
    ALTER TABLE synced_files ADD COLUMN synced_at REAL;      -- unix time of the record
    CREATE TABLE IF NOT EXISTS sync_failures(
        input_file NOT NULL,
        server TEXT NOT NULL,          -- '' when the failure came before a destination was chosen
        kind TEXT,
        error TEXT,
        error_kind TEXT,               -- permanent, transient, source (fc-transport's words)
        stage TEXT,
        event_id TEXT,
        failed_at REAL NOT NULL,
        failures INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY(input_file, server)
    );
    CREATE TABLE IF NOT EXISTS source_deletions(
        input_file PRIMARY KEY,
        servers TEXT NOT NULL,         -- JSON list of the servers it was synced to
        size INTEGER, mtime_ns INTEGER, ino INTEGER,   -- the version synced, the only one that may be deleted
        source TEXT, root, rel,
        scheduled_at REAL NOT NULL,
        due_at REAL NOT NULL,
        deleted_at REAL,               -- NULL: scheduled; set: fc-record deleted the file (just before unlink)
        event_id TEXT,                 -- the id of the deleted event fc-watch will report for that deletion
        owner TEXT                     -- the fc-record state file that scheduled it
    );
    """,
    # the fence: the order of the last event applied per file and server (events with an "order" field)
    """
    CREATE TABLE IF NOT EXISTS record_order(
        input_file NOT NULL,
        server TEXT NOT NULL,
        event_order INTEGER NOT NULL,
        PRIMARY KEY(input_file, server)
    );
    """,
]


def _uri(path: str | os.PathLike[str], mode: str) -> str:
    return f"file:{quote(os.path.abspath(path))}?mode={mode}"


def _translate(exc: sqlite3.DatabaseError, path: Path | str, what: str = "synced-files database") -> Exception:
    return translate(exc, path, what)


def open_readonly(
    path: str | os.PathLike[str], timeout: float = 30.0, what: str = "synced-files database"
) -> sqlite3.Connection:
    """A read-only connection (fc-verify, fc-transport's --record-db, --status): never creates the file."""
    if not os.path.exists(path):
        raise ConfigError(f"{what} {os.fspath(path)}: no such file")
    try:
        # any thread may use it (fc-transport's workers share one, under a lock)
        db = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _translate(exc, path, what) from None
    return db


def has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


class Records:
    """The writer's connection: one short transaction per change."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.name = str(self.path)  # what messages call it
        self._lost: RetryableError | None = None  # the round's transaction, rolled back under our feet
        # Tables that held no row when the round's transaction began: their per-event lookups and deletes are
        # skipped.  Nobody else can add rows while we hold the write lock, and ``added`` notes what we add.
        self._empty: set[str] = set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create directory {self.path.parent}: {exc.strerror}") from None
        self._keeps_wal = False  # closed without a checkpoint (close)
        try:
            if not self.path.exists():
                self._create()
            self.db = self._connect(self.path)
            self._wal()
            self._migrate()
            # (ctypes, which the setting needs before Python 3.12: fc-record has it loaded anyway, beneath.py)
            import ctypes  # noqa: F401

            self._keeps_wal = keep_wal_at_close(self.db)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.DatabaseError, AttributeError):
                self.db.close()  # (no mode switched: close's)
            self.db = None  # type: ignore[assignment]
            raise _translate(exc, self.path) from None

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        small_cache(db)
        sync = "FULL" if os.environ.get("FC_SYNC", "").upper() == "FULL" else "NORMAL"
        db.execute(f"PRAGMA synchronous={sync}")
        return db

    def _wal(self) -> None:
        """WAL mode, asked for only when the file is not in it yet (a file of an older version, an old daemon's
        database): ``PRAGMA journal_mode``, even as a bare query on a file in WAL mode already, was seen to make a
        reader with no busy timeout fail ("database is locked"), at every start.  Whether the file is in
        WAL mode is asked of this connection after its first read, by a passive checkpoint (-1 frames: no WAL;
        it takes only the WAL's own locks, which a reader never waits on, and finds the WAL empty after our
        close): a file in WAL mode then stays so while we are connected (switching out of it takes the exclusive
        lock that our connection's shared one keeps from it).  Not by reading the file's header: closing any
        descriptor of the file drops every lock this process holds on it (POSIX), our other connection's
        (the deleter's) included, and the next reader to close took itself for the last and removed the WAL
        under fc-record."""
        self.db.execute("SELECT count(*) FROM sqlite_master").fetchall()  # (all: the read is over, then)
        ((busy, frames, _),) = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if not busy and frames < 0:
            self.db.execute("PRAGMA journal_mode=WAL")  # once in the file's life: readers may wait for this one

    def _create(self) -> None:
        """Build a new database under a temporary name and rename it into place: a reader polling for the
        file (a web app started first) never meets it half made, in rollback mode, and locked."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.db = self._connect(tmp)
            self.db.execute("PRAGMA journal_mode=WAL")  # nobody reads it yet
            self._migrate()
            self.db.close()  # checkpoints and removes the -wal and -shm files; WAL mode stays in the header
            self.db = None  # type: ignore[assignment]
            with contextlib.suppress(FileExistsError):  # another fc-record won the race: use its file
                os.link(tmp, self.path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(tmp) + suffix)

    def _migrate(self) -> None:
        migrate(self.db, MIGRATIONS, f"synced-files database {self.path}")

    def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: one record, all or nothing."""
        return transaction(self.db, self.path, "synced-files database")

    @contextlib.contextmanager
    def item(self, alone: bool = False) -> Iterator[sqlite3.Connection]:
        """One record, all or nothing (a savepoint), in the transaction of the whole round, begun here by the
        first: a round of 2,000 events is one commit, not 2,000 (each is a lock, a page write, a WAL frame).
        ``commit`` makes the round durable; until then readers see none of it.

        ``alone``: the record is one statement, which SQLite undoes by itself when it fails (a statement is
        atomic; an error that rolls back the whole transaction is found below): no savepoint, whose two
        statements cost more than the record's own (fc-record's usual upsert)."""
        db = self._begin()
        if not alone:
            try:
                db.execute("SAVEPOINT record")
            except sqlite3.DatabaseError as exc:
                raise self._lose(exc) from None
        try:
            yield db
        except BaseException as exc:
            if not alone:
                try:
                    db.execute("ROLLBACK TO record")
                    db.execute("RELEASE record")
                except sqlite3.DatabaseError as undo:
                    self._lose(undo)
            if not db.in_transaction:  # SQLite rolled back the whole transaction (a full disk, an I/O error)
                self._lose(exc)
            raise
        if alone:
            return
        try:
            db.execute("RELEASE record")
        except sqlite3.DatabaseError as exc:
            raise self._lose(exc) from None

    def _begin(self) -> sqlite3.Connection:
        """The round's transaction, begun here by its first record."""
        if self._lost is not None:
            raise self._lost
        db = self.db
        if not db.in_transaction:
            try:
                db.execute("BEGIN IMMEDIATE")
                self._empty = {
                    t for t in _SKIPPABLE if not db.execute(f"SELECT EXISTS(SELECT 1 FROM {t})").fetchone()[0]
                }
            except sqlite3.DatabaseError as exc:
                err = _translate(exc, self.path)
                if not isinstance(err, RetryableError):
                    raise err from None  # a damaged file: no retry mends it
                raise self._lose(exc) from None
        return db

    def plain(self) -> bool:
        """Whether a synced file's record is its upsert alone in this round (``upsert_rows``): no failure to
        clear, no deletion to void (sync_failures and source_deletions held no row when the round began, and
        this round added none).  Begins the round's transaction."""
        self._begin()
        return len(self._empty) == len(_SKIPPABLE)

    def upsert_rows(self, rows: Sequence[tuple]) -> list[tuple[int, Exception]]:
        """Upsert ``rows`` (``Synced.values``) in the round's transaction, one statement for all, not one call
        per row; none of them clears a failure (``plain``).  Returns the rows the database refused, by index
        with the error: each is left out alone, as a failed statement is (a trigger, a constraint), and the
        others are written.  RetryableError when the round's transaction is lost (a full disk)."""
        db = self._begin()
        try:
            db.execute("SAVEPOINT rows")
            db.executemany(_UPSERT, rows)
        except Exception as exc:
            if not db.in_transaction:
                raise self._lose(exc) from None
            try:  # a row refused: again one by one, to know which (rare: no need to be quick)
                db.execute("ROLLBACK TO rows")
                refused: list[tuple[int, Exception]] = []
                for i, row in enumerate(rows):
                    try:
                        db.execute(_UPSERT, row)
                    except Exception as one:
                        if not db.in_transaction:
                            raise self._lose(one) from None
                        refused.append((i, one))
                db.execute("RELEASE rows")
            except sqlite3.DatabaseError as undo:
                raise self._lose(undo) from None
            return refused
        try:
            db.execute("RELEASE rows")
        except sqlite3.DatabaseError as exc:
            raise self._lose(exc) from None
        return []

    def may_hold(self, table: str) -> bool:
        """False when ``table`` (sync_failures, source_deletions) is known to be empty: no need to look in it."""
        return table not in self._empty

    def added(self, table: str) -> None:
        """A row was written into ``table`` in this round: it may hold rows now."""
        self._empty.discard(table)

    def _lose(self, exc: BaseException) -> RetryableError:
        """The round's earlier records are gone too: ``commit`` says so, and the round is done again."""
        self._empty = set()
        with contextlib.suppress(sqlite3.DatabaseError):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        if self._lost is None:
            self._lost = RetryableError(f"synced-files database {self.path}: {exc} (nothing of this round recorded)")
        return self._lost

    def commit(self) -> None:
        """Commit the round's records (``item``); RetryableError when they are not all committed."""
        lost, self._lost = self._lost, None
        self._empty = set()
        if lost is not None:
            raise lost
        if not self.db.in_transaction:
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.DatabaseError):
                self.db.execute("ROLLBACK")
            raise RetryableError(f"synced-files database {self.path}: {exc} (nothing of this round recorded)") from None

    def rollback(self) -> None:
        """Drop the round's records that were not committed (a stop between the work and the round's commit)."""
        self._lost = None
        self._empty = set()
        with contextlib.suppress(sqlite3.DatabaseError):
            if self.db is not None and self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            with contextlib.suppress(sqlite3.DatabaseError):
                db.execute("PRAGMA busy_timeout=200")  # a reader holding the WAL: leave it as it is
                if self._keeps_wal:
                    # The WAL's frames into the file and the WAL emptied (a checkpoint takes no lock a reader
                    # sees): the next first opener's recovery reads nothing, and a reader that may not write the
                    # -shm (the web server's), which reads the WAL whole at each connection, reads nothing.  The
                    # close then leaves -wal and -shm in place (keep_wal_at_close), which such a reader needs.
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                else:
                    # Where the close cannot be kept from checkpointing (Python before 3.12 off Linux): it would
                    # remove -wal and -shm, and a WAL database without them cannot be opened by a reader that
                    # may not create files in its directory (the web server's user reading the Drupal CDN
                    # module's database).  So the last writer leaves it in rollback-journal mode, as before: a
                    # lock readers may meet at every stop and start.  Another fc-record still connected keeps
                    # WAL on: then this fails, harmlessly, and the last one to close switches.
                    db.execute("PRAGMA journal_mode=DELETE")
            with contextlib.suppress(sqlite3.DatabaseError):
                db.close()
            self.db = None  # type: ignore[assignment]

    # -- synced rows ------------------------------------------------------------------------------

    def upsert(self, s: Synced, now: float | None = None, failures: bool = True) -> None:
        """Insert or update the row; ``failures``: also clear the file's last failure for that server."""
        db = self.db
        db.execute(_UPSERT, s.values(time.time() if now is None else now))
        if failures:
            db.execute("DELETE FROM sync_failures WHERE input_file=? AND server=?", (s.input_file, s.server))

    def remove(self, input_file: str | bytes, server: str) -> None:
        db = self.db
        db.execute("DELETE FROM synced_files WHERE input_file=? AND server=?", (input_file, server))
        db.execute("DELETE FROM sync_failures WHERE input_file=? AND server=?", (input_file, server))

    def fail(self, input_file: str | bytes, server: str, fields: Mapping[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO sync_failures(input_file, server, kind, error, error_kind, stage, event_id, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(input_file, server) DO UPDATE SET kind=excluded.kind,"
            " error=excluded.error, error_kind=excluded.error_kind, stage=excluded.stage,"
            " event_id=excluded.event_id, failed_at=excluded.failed_at, failures=failures+1",
            (
                input_file,
                server,
                fields.get("kind"),
                fields.get("error"),
                fields.get("error_kind"),
                fields.get("stage"),
                fields.get("event_id"),
                time.time(),
            ),
        )

    def claim(self, input_file: str | bytes, server: str, order: int, limit: int) -> bool:
        """The fence: note ``order`` as the last applied for the file and server, unless a later one was applied
        (False: the event is older than what the record holds, and must change nothing).

        Only a stored order up to ``limit`` (this host's clock plus the allowed skew, in microseconds: the caller
        never gives a larger ``order``) is a later one.  One past it was never a writer's: a forged line stored by a
        version before that rule, or anything a hand put in the file (text, NULL: the file is not trusted).  Taken
        as a fence, it held every later event of the file back for good; so it is replaced, and the record heals."""
        return (
            self.db.execute(
                "INSERT INTO record_order(input_file, server, event_order) VALUES (?, ?, ?)"
                " ON CONFLICT(input_file, server) DO UPDATE SET event_order=excluded.event_order"
                " WHERE NOT coalesce(record_order.event_order > excluded.event_order"
                " AND typeof(record_order.event_order) IN ('integer', 'real') AND record_order.event_order <= ?, 0)"
                " RETURNING 1",
                (input_file, server, order, limit),
            ).fetchone()
            is not None
        )

    def import_row(self, s: Synced) -> bool:
        """Insert an old daemon's row unless the file has one for that server already (True: inserted)."""
        cur = self.db.execute(
            "INSERT INTO synced_files(input_file, transported_file_basename, url, server, source, root, rel)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(input_file, server) DO NOTHING",
            (s.input_file, s.basename, s.url, s.server, s.source, s.root, s.rel),
        )
        return bool(cur.rowcount)

    def owned(self, owner: str) -> list[tuple[str | bytes, float, float | None]]:
        """(input_file, due_at, deleted_at) of the source deletions ``owner`` scheduled."""
        return self.db.execute(
            "SELECT input_file, due_at, deleted_at FROM source_deletions WHERE owner=?", (owner,)
        ).fetchall()

    def scheduled(self, owner: str) -> int:
        """Deletions ``owner`` scheduled and has not carried out."""
        (n,) = self.db.execute(
            "SELECT count(*) FROM source_deletions WHERE deleted_at IS NULL AND owner=?", (owner,)
        ).fetchone()
        return int(n)

    def deletion_mark(self, input_file: str | bytes) -> tuple[float | None, str | None] | None:
        return deletion_mark(self.db, input_file)

    def versions(self, input_file: str | bytes) -> dict[str, Version]:
        """server -> the source version synced there, for one file."""
        return {
            server: (size, mtime_ns, ino)
            for server, size, mtime_ns, ino in self.db.execute(
                "SELECT server, size, mtime_ns, ino FROM synced_files WHERE input_file=?", (input_file,)
            )
        }

    # -- deletions at the source ------------------------------------------------------------------

    def deletion(self, input_file: str | bytes) -> Deletion | None:
        if not self.may_hold("source_deletions"):
            return None
        row = self.db.execute(
            "SELECT input_file, servers, size, mtime_ns, ino, source, root, rel, scheduled_at, due_at, deleted_at,"
            " event_id, owner FROM source_deletions WHERE input_file=?",
            (input_file,),
        ).fetchone()
        if row is None:
            return None
        return Deletion(row[0], json.loads(row[1]), (row[2], row[3], row[4]), *row[5:])

    def put_deletion(self, d: Deletion) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO source_deletions(input_file, servers, size, mtime_ns, ino, source, root, rel,"
            " scheduled_at, due_at, deleted_at, event_id, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d.input_file,
                json.dumps(sorted(d.servers)),
                *d.version,
                d.source,
                d.root,
                d.rel,
                d.scheduled_at,
                d.due_at,
                d.deleted_at,
                d.event_id,
                d.owner,
            ),
        )

    def drop_deletion(self, input_file: str | bytes, version: Version | None = None) -> None:
        """Forget a schedule or a past deletion (of ``version`` only, when given)."""
        db = self.db
        if version is None:
            db.execute("DELETE FROM source_deletions WHERE input_file=?", (input_file,))
        else:
            db.execute(
                "DELETE FROM source_deletions WHERE input_file=? AND size IS ? AND mtime_ns IS ? AND ino IS ?",
                (input_file, *version),
            )


def deletion_mark(db: sqlite3.Connection, input_file: str | bytes) -> tuple[float | None, str | None] | None:
    """(deleted_at, event_id) of the file's source_deletions row, None without one."""
    try:
        return db.execute(
            "SELECT deleted_at, event_id FROM source_deletions WHERE input_file=?", (input_file,)
        ).fetchone()
    except sqlite3.OperationalError:  # no such table: an old database, nothing deleted by us
        return None
