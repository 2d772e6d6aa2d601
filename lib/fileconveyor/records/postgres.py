"""The synced-files record in PostgreSQL (``--db postgresql://...``): one record that many hosts write and read.

The tables are SQLite's (sqlite.py), so the Drupal CDN module's ``SELECT url, server FROM synced_files WHERE
input_file = ?`` reads them unchanged, with one difference SQLite's loose typing hid: PostgreSQL's text cannot hold
a name that is not UTF-8, so every path column has a ``bytea`` twin (``input_file_bytes``, ...) with the exact bytes,
and the text column holds the name (UTF-8) or, for such a name, a readable form (``\\xff``).  Rows are keyed by the
bytes, so two names that read alike never share a row.

Many fc-record processes may write at once (one per worker host): each round of events is one transaction, a
row's write locks it until the commit, and the order fence (``claim``, the ``record_order`` table) is checked and
moved under that lock, so an older event never overwrites what a newer one wrote, whoever commits first.  A round
first takes a file's advisory lock (``_hold``) and never waits for one while it holds others: rows locked one
event after another, in the order each writer's events come, deadlocked two writers sharing files.

The connection, the URL and what may be shown of it: pg_connect.py; the readers: pg_reader.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..digests import blake2b
from ..errors import FCError, RetryableError, StateError
from .model import Deletion, Synced, Version, db_key, key_bytes
from .pg_connect import _Conn, _name, _raw, _text

_LOCK = 0x46435265636F7264  # pg_advisory_xact_lock key ("FCRecord"): one fc-record migrates at a time
_FILES = 0x4643  # the first key of a file's advisory lock (pg_advisory_xact_lock(int, int)); the second: _file_lock
# A round's advisory locks take PostgreSQL's shared lock table (max_locks_per_transaction x max_connections,
# 6,400 by default, for every session): past this many, the round commits what it has and goes on.
MAX_HELD = 200


def _file_lock(key: bytes) -> int:
    """The second key of a file's advisory lock: 32 bits of a hash of its name (two files sharing one only wait
    for each other, which is never a deadlock here: see PgRecord._hold)."""
    return int.from_bytes(blake2b(key, digest_size=4).digest(), "big", signed=True)


# Append-only, as SQLite's; fc_record_schema counts those applied.
MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS synced_files(
        input_file text NOT NULL,           -- the seed's four columns first, as the Drupal CDN module reads them
        transported_file_basename text,
        url text,
        server text NOT NULL,
        remote text, size bigint, mtime_ns bigint, ino bigint, remote_size bigint, hash text, processed text,
        source text, root text, rel text, event_id text, synced_at double precision,
        input_file_bytes bytea NOT NULL,    -- the exact names: text cannot hold one that is not UTF-8
        basename_bytes bytea, remote_bytes bytea, root_bytes bytea, rel_bytes bytea,
        PRIMARY KEY (input_file_bytes, server)
    );
    CREATE INDEX IF NOT EXISTS synced_files_input_file ON synced_files (input_file, server);
    CREATE TABLE IF NOT EXISTS sync_failures(
        input_file text NOT NULL,
        server text NOT NULL,
        kind text, error text, error_kind text, stage text, event_id text,
        failed_at double precision NOT NULL,
        failures integer NOT NULL DEFAULT 1,
        input_file_bytes bytea NOT NULL,
        PRIMARY KEY (input_file_bytes, server)
    );
    CREATE TABLE IF NOT EXISTS source_deletions(
        input_file text NOT NULL,
        servers text NOT NULL,
        size bigint, mtime_ns bigint, ino bigint,
        source text, root text, rel text,
        scheduled_at double precision NOT NULL,
        due_at double precision NOT NULL,
        deleted_at double precision,
        event_id text,
        owner text,
        input_file_bytes bytea PRIMARY KEY, root_bytes bytea, rel_bytes bytea
    );
    CREATE TABLE IF NOT EXISTS record_order(
        input_file_bytes bytea NOT NULL,
        server text NOT NULL,
        event_order bigint NOT NULL,
        PRIMARY KEY (input_file_bytes, server)
    );
    """,
]


class PgRecord(_Conn):
    """The writer (fc-record): one transaction per round of events, a savepoint per event (as sqlite.Records)."""

    def __init__(self, url: str):
        super().__init__(url, read_only=False)
        self._lost: RetryableError | None = None
        self._open = False  # a transaction is open: tx's, or the round's (item ... commit)
        self._in_item = False  # in item(): the round's savepoint is open
        self._held: set[int] = set()  # the files' advisory locks this round's transaction holds (_hold)
        try:
            with self.tx():
                self._migrate()
        except BaseException:
            self.close()
            raise

    def _migrate(self) -> None:
        self.x("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        self.x("CREATE TABLE IF NOT EXISTS fc_record_schema(version integer NOT NULL)")
        row = self.x("SELECT max(version) FROM fc_record_schema").fetchone()
        version = row[0] or 0
        if version > len(MIGRATIONS):
            raise StateError(
                f"synced-files database {self.name} was written by a newer File Conveyor "
                f"(schema {version}, this one knows {len(MIGRATIONS)}); upgrade"
            )
        for number in range(version, len(MIGRATIONS)):
            self.x(MIGRATIONS[number])
            self.x("DELETE FROM fc_record_schema")
            self.x("INSERT INTO fc_record_schema(version) VALUES (%s)", (number + 1,))

    @contextlib.contextmanager
    def tx(self) -> Iterator[PgRecord]:
        """BEGIN ... COMMIT: one change, all or nothing (the deleter's, an import's)."""
        self.ensure()
        self.x("BEGIN")
        self._open = True
        try:
            yield self
        except BaseException:
            self._rollback()
            raise
        try:
            self.x("COMMIT")
        except FCError:
            self._rollback()
            raise
        self._open = False

    @contextlib.contextmanager
    def item(self, alone: bool = False) -> Iterator[PgRecord]:
        """One record, all or nothing (a savepoint), in the transaction of the whole round, begun by the first.
        (``alone`` changes nothing here: a failed statement aborts a PostgreSQL transaction, the savepoint
        keeps the round's other records.)"""
        if self._lost is not None:
            raise self._lost
        try:
            if not self._open:
                self.ensure()
                self.x("BEGIN")
                self._open = True
            self.x("SAVEPOINT record")
        except RetryableError as exc:
            raise self._lose(exc) from None
        self._in_item, before = True, set(self._held)
        try:
            yield self
        except BaseException as exc:
            self._in_item = False
            try:
                self.x("ROLLBACK TO SAVEPOINT record")
                self.x("RELEASE SAVEPOINT record")
            except FCError as undo:
                raise self._lose(undo) from None
            self._held &= before  # the rollback released the locks taken since the savepoint
            if self.conn is None or self.conn.closed:  # the connection went, and the round with it
                raise self._lose(exc) from None
            raise
        self._in_item = False
        try:
            self.x("RELEASE SAVEPOINT record")
        except FCError as exc:
            raise self._lose(exc) from None

    def _hold(self, key: bytes) -> None:
        """The file's advisory lock for the round, taken before any of its rows.  Each writer locks rows in the order
        its events come, so two writers sharing files deadlocked (PostgreSQL broke one round after a second, done
        again after a back-off, and again).  A round never waits while it holds a lock: when another writer holds
        this one (or the round holds MAX_HELD), it commits what it wrote so far, every event of it complete (a
        round done again changes nothing: upserts and the order fence), then waits holding none.  tx() takes
        none: the deleter's writes one file, and an import's would fill the lock table."""
        if not self._in_item:
            return
        lock = _file_lock(key)
        if lock in self._held:
            return
        if (
            len(self._held) >= MAX_HELD
            or not self.x("SELECT pg_try_advisory_xact_lock(%s, %s)", (_FILES, lock)).fetchone()[0]
        ):
            if self._held:
                self.x("COMMIT")
                self._held.clear()
                self.x("BEGIN")
                self.x("SAVEPOINT record")
            self.x("SELECT pg_advisory_xact_lock(%s, %s)", (_FILES, lock))
        self._held.add(lock)

    def may_hold(self, table: str) -> bool:
        return True  # other writers may add rows at any time: always look

    def plain(self) -> bool:
        return False  # another writer may have added a failure to clear: every record is an item of its own

    def upsert_rows(self, rows: Sequence[tuple]) -> list[tuple[int, Exception]]:
        """sqlite.Records.upsert_rows, a row at a time (each takes its file's lock first, and clears a failure)."""
        refused: list[tuple[int, Exception]] = []
        for i, row in enumerate(rows):
            try:
                with self.item():
                    self.upsert(Synced(*row[:-1]), now=row[-1])
            except RetryableError:
                raise
            except Exception as exc:
                refused.append((i, exc))
        return refused

    def added(self, table: str) -> None:
        pass

    def _lose(self, exc: BaseException) -> RetryableError:
        self._rollback()
        if self._lost is None:
            self._lost = RetryableError(f"synced-files database {self.name}: {exc} (nothing of this round recorded)")
        return self._lost

    def _rollback(self) -> None:
        self._open = False
        self._held.clear()
        if self.conn is not None and not self.conn.closed:
            with contextlib.suppress(Exception):
                self.conn.execute("ROLLBACK")

    def commit(self) -> None:
        lost, self._lost = self._lost, None
        if lost is not None:
            raise lost
        if not self._open:
            return
        try:
            self.x("COMMIT")
            self._open = False
            self._held.clear()
        except FCError as exc:
            self._rollback()
            raise RetryableError(f"synced-files database {self.name}: {exc} (nothing of this round recorded)") from None

    def rollback(self) -> None:
        self._lost = None
        self._rollback()

    # -- synced rows ------------------------------------------------------------------------------

    def upsert(self, s: Synced, now: float | None = None, failures: bool = True) -> None:
        self._hold(key_bytes(s.input_file))
        cols = (
            "input_file, transported_file_basename, url, server, remote, size, mtime_ns, ino, remote_size, hash,"
            " processed, source, root, rel, event_id, synced_at, input_file_bytes, basename_bytes, remote_bytes,"
            " root_bytes, rel_bytes"
        )
        update = ", ".join(f"{c}=excluded.{c}" for c in cols.replace(" ", "").split(",")[1:] if c != "server")
        self.x(
            f"INSERT INTO synced_files({cols}) VALUES ({', '.join(['%s'] * 21)})"
            f" ON CONFLICT (input_file_bytes, server) DO UPDATE SET input_file=excluded.input_file, {update}",
            (
                _text(s.input_file), _text(s.basename), s.url, s.server, _text(s.remote), s.size, s.mtime_ns, s.ino,
                s.remote_size, s.hash, s.processed, s.source, _text(s.root), _text(s.rel), s.event_id,
                time.time() if now is None else now,
                key_bytes(s.input_file), _raw(s.basename), _raw(s.remote), _raw(s.root), _raw(s.rel),
            ),
        )  # fmt: skip
        if failures:
            self.x(
                "DELETE FROM sync_failures WHERE input_file_bytes=%s AND server=%s", (key_bytes(s.input_file), s.server)
            )

    def remove(self, input_file: str | bytes, server: str) -> None:
        key = key_bytes(input_file)
        self._hold(key)
        self.x("DELETE FROM synced_files WHERE input_file_bytes=%s AND server=%s", (key, server))
        self.x("DELETE FROM sync_failures WHERE input_file_bytes=%s AND server=%s", (key, server))

    def fail(self, input_file: str | bytes, server: str, fields: Mapping[str, Any]) -> None:
        self._hold(key_bytes(input_file))
        self.x(
            "INSERT INTO sync_failures(input_file, server, kind, error, error_kind, stage, event_id, failed_at,"
            " input_file_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (input_file_bytes, server)"
            " DO UPDATE SET kind=excluded.kind, error=excluded.error, error_kind=excluded.error_kind,"
            " stage=excluded.stage, event_id=excluded.event_id, failed_at=excluded.failed_at,"
            " failures=sync_failures.failures+1",
            (
                _text(input_file), server, fields.get("kind"), fields.get("error"), fields.get("error_kind"),
                fields.get("stage"), fields.get("event_id"), time.time(), key_bytes(input_file),
            ),
        )  # fmt: skip

    def claim(self, input_file: str | bytes, server: str, order: int, limit: int) -> bool:
        """The fence (see sqlite.Records.claim: a stored order past ``limit`` is no fence, and is replaced; every
        worker's fc-record heals it by its own clock).  The row stays locked until the round commits, so a writer
        with an older event waits and then sees the newer order."""
        self._hold(key_bytes(input_file))
        return (
            self.x(
                "INSERT INTO record_order(input_file_bytes, server, event_order) VALUES (%s, %s, %s)"
                " ON CONFLICT (input_file_bytes, server) DO UPDATE SET event_order=excluded.event_order"
                " WHERE NOT coalesce(record_order.event_order > excluded.event_order"
                " AND record_order.event_order <= %s, false) RETURNING 1",
                (key_bytes(input_file), server, order, limit),
            ).fetchone()
            is not None
        )

    def import_row(self, s: Synced) -> bool:
        self._hold(key_bytes(s.input_file))
        cur = self.x(
            "INSERT INTO synced_files(input_file, transported_file_basename, url, server, source, root, rel,"
            " input_file_bytes, basename_bytes, root_bytes, rel_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s) ON CONFLICT (input_file_bytes, server) DO NOTHING",
            (
                _text(s.input_file), _text(s.basename), s.url, s.server, s.source, _text(s.root), _text(s.rel),
                key_bytes(s.input_file), _raw(s.basename), _raw(s.root), _raw(s.rel),
            ),
        )  # fmt: skip
        return bool(cur.rowcount)

    def versions(self, input_file: str | bytes) -> dict[str, Version]:
        rows = self.x(
            "SELECT server, size, mtime_ns, ino FROM synced_files WHERE input_file_bytes=%s", (key_bytes(input_file),)
        )
        return {server: (size, mtime_ns, ino) for server, size, mtime_ns, ino in rows}

    # -- deletions at the source ------------------------------------------------------------------

    def deletion(self, input_file: str | bytes) -> Deletion | None:
        # FOR UPDATE: the row stays ours until the transaction ends (the deleter checks, then marks it)
        self._hold(key_bytes(input_file))
        row = self.x(
            "SELECT input_file_bytes, servers, size, mtime_ns, ino, source, root, root_bytes, rel, rel_bytes,"
            " scheduled_at, due_at, deleted_at, event_id, owner FROM source_deletions WHERE input_file_bytes=%s"
            + (" FOR UPDATE" if self._open else ""),
            (key_bytes(input_file),),
        ).fetchone()
        if row is None:
            return None
        return Deletion(
            db_key(bytes(row[0])), json.loads(row[1]), (row[2], row[3], row[4]), row[5],
            _name(row[6], row[7]), _name(row[8], row[9]), *row[10:],
        )  # fmt: skip

    def put_deletion(self, d: Deletion) -> None:
        cols = (
            "input_file, servers, size, mtime_ns, ino, source, root, rel, scheduled_at, due_at, deleted_at, event_id,"
            " owner, input_file_bytes, root_bytes, rel_bytes"
        )
        update = ", ".join(f"{c}=excluded.{c}" for c in cols.replace(" ", "").split(",") if c != "input_file_bytes")
        self._hold(key_bytes(d.input_file))
        self.x(
            f"INSERT INTO source_deletions({cols}) VALUES ({', '.join(['%s'] * 16)})"
            f" ON CONFLICT (input_file_bytes) DO UPDATE SET {update}",
            (
                _text(d.input_file), json.dumps(sorted(d.servers)), *d.version, d.source, _text(d.root),
                _text(d.rel), d.scheduled_at, d.due_at, d.deleted_at, d.event_id, d.owner,
                key_bytes(d.input_file), _raw(d.root), _raw(d.rel),
            ),
        )  # fmt: skip

    def drop_deletion(self, input_file: str | bytes, version: Version | None = None) -> None:
        self._hold(key_bytes(input_file))
        if version is None:
            self.x("DELETE FROM source_deletions WHERE input_file_bytes=%s", (key_bytes(input_file),))
        else:
            self.x(
                "DELETE FROM source_deletions WHERE input_file_bytes=%s AND size IS NOT DISTINCT FROM %s"
                " AND mtime_ns IS NOT DISTINCT FROM %s AND ino IS NOT DISTINCT FROM %s",
                (key_bytes(input_file), *version),
            )

    def owned(self, owner: str) -> list[tuple[str | bytes, float, float | None]]:
        rows = self.x("SELECT input_file_bytes, due_at, deleted_at FROM source_deletions WHERE owner=%s", (owner,))
        return [(db_key(bytes(k)), due, done) for k, due, done in rows]

    def scheduled(self, owner: str) -> int:
        sql = "SELECT count(*) FROM source_deletions WHERE deleted_at IS NULL AND owner=%s"
        return int(self.x(sql, (owner,)).fetchone()[0])

    def deletion_mark(self, input_file: str | bytes) -> tuple[float | None, str | None] | None:
        sql = "SELECT deleted_at, event_id FROM source_deletions WHERE input_file_bytes=%s"
        return self.x(sql, (key_bytes(input_file),)).fetchone()
