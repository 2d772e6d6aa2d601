"""The ``acks`` table: what each reader of a writer holds safely, in the writer's own state file.

Every writer keeps one (a stage's state file, delivery/durable.py, and fc-watch's, stages/watch/state.py): one
row per reader, written by the reader (durable.Acknowledger, once delivery/ack_check.py has shown the file is its
writer's), read by the writer to know what it may forget and what to re-send.  This module is the only code that
knows the table: its definition, its migration, and every query on it.  docs/durability.md says why each column is
there.
"""

from __future__ import annotations

import errno
import os
import shlex
import sqlite3
import stat
import time
from pathlib import Path

from ..events import display
from ..state import lock_holder

READER_EXPIRY = 7 * 24 * 3600.0  # a reader silent this long is forgotten

TABLE = (
    "CREATE TABLE acks(\n"
    "    reader TEXT PRIMARY KEY,             -- the reader's state file\n"
    "    epoch TEXT NOT NULL,                 -- the writer's epoch the reader read lines of\n"
    "    seq INTEGER NOT NULL,                -- the highest hop.seq it no longer needs\n"
    "    at REAL NOT NULL,                    -- when it said so (unix time)\n"
    "    session TEXT NOT NULL DEFAULT '',    -- its process: a new one lost what the old one held in memory\n"
    "    through INTEGER                      -- the highest seq of ours done by it and every stage after it\n"
    ")"
)


def migrate(db: sqlite3.Connection) -> None:
    """The migration that gives a state file its acks table, or the columns an older table lacks: ``session``
    (state files of stages written before sessions existed), ``through`` (before end-to-end acknowledgements:
    NULL, which the writer reads as the reader's ``seq``, what such a reader meant).  Runs inside the caller's
    migration transaction; listed again in a file's migrations for each column added since."""
    cols = {row[1] for row in db.execute("PRAGMA table_info(acks)")}
    if not cols:
        db.execute(TABLE)
        return
    if "session" not in cols:
        db.execute("ALTER TABLE acks ADD COLUMN session TEXT NOT NULL DEFAULT ''")
    if "through" not in cols:
        db.execute("ALTER TABLE acks ADD COLUMN through INTEGER")


# -- the reader's side ------------------------------------------------------------------


def record(
    conn: sqlite3.Connection, reader: str, epoch: str, seq: int, session: str, through: int | None = None
) -> None:
    """Write a reader's acknowledgement into its writer's state file (one statement: autocommit).  ``through``
    None: not known in this process yet; the row keeps what an earlier one said (for the same epoch), or 0."""
    values = {"r": reader, "e": epoch, "s": seq, "at": time.time(), "sess": session, "t": through}
    try:
        conn.execute(
            "INSERT INTO acks(reader, epoch, seq, at, session, through) "
            "VALUES (:r, :e, :s, :at, :sess, coalesce(:t, 0)) "
            "ON CONFLICT(reader) DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq, at=excluded.at, "
            "session=excluded.session, "
            "through=CASE WHEN acks.epoch=excluded.epoch THEN coalesce(:t, acks.through, 0) ELSE coalesce(:t, 0) END",
            values,
        )
    except sqlite3.OperationalError as exc:
        if "through" not in str(exc):
            raise
        # a writer of an older File Conveyor (its file not migrated yet): it knows no through, and never asks
        conn.execute(
            "INSERT INTO acks(reader, epoch, seq, at, session) VALUES (:r, :e, :s, :at, :sess) "
            "ON CONFLICT(reader) DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq, at=excluded.at, "
            "session=excluded.session",
            values,
        )


# -- the writer's side ------------------------------------------------------------------


def readers(db: sqlite3.Connection, epoch: str, now: float | None = None) -> dict[str, int]:
    """Readers heard from within READER_EXPIRY, with the seq each acknowledged."""
    now = time.time() if now is None else now
    rows = db.execute("SELECT reader, seq FROM acks WHERE epoch=? AND at>=?", (epoch, now - READER_EXPIRY))
    return dict(rows.fetchall())


def lowest_silent(db: sqlite3.Connection, epoch: str, now: float | None = None) -> int | None:
    """The lowest seq acknowledged by a reader not heard from within READER_EXPIRY whose state file is still there
    (None: no such reader).  Not waited for, but not forgotten either: fc-watch keeps the deletions it has not
    acknowledged (see ``sessions``)."""
    seqs = [seq for _, _, seq in _silent_but_there(db, epoch, now)]
    return min(seqs) if seqs else None


def _silent_but_there(db: sqlite3.Connection, epoch: str, now: float | None) -> list[tuple[str, str, int]]:
    """(reader, session, seq) of the readers silent for READER_EXPIRY whose state file is there for sure
    (state_gone: looked up by name only; as a rule no row at all)."""
    now = time.time() if now is None else now
    rows = db.execute("SELECT reader, session, seq FROM acks WHERE epoch=? AND NOT at>=?", (epoch, now - READER_EXPIRY))
    return [(r, sess, seq) for r, sess, seq in rows if type(seq) is int and state_gone(r) is False]


def throughs(db: sqlite3.Connection, epoch: str, now: float | None = None) -> dict[str, int]:
    """Readers heard from within READER_EXPIRY, with the seq up to which each one and every File Conveyor stage
    after it are done with our lines (a reader from before ``through`` existed: its ``seq``)."""
    now = time.time() if now is None else now
    rows = db.execute(
        "SELECT reader, coalesce(through, seq) FROM acks WHERE epoch=? AND at>=?", (epoch, now - READER_EXPIRY)
    )
    return dict(rows.fetchall())


def sessions(db: sqlite3.Connection, epoch: str, now: float | None = None) -> dict[str, tuple[str, int]]:
    """Each reader's process token and acknowledged seq: readers heard from within READER_EXPIRY, and older ones
    whose state file is still there.  A reader silent that long whose state file is gone is re-sent to no more:
    fc-watch, which never ran forget_stale, re-sent what it had not acknowledged at each start, for good, to every
    later look (`| jq` included).  One whose state file is there may run again: a cron job run less often than
    READER_EXPIRY, its last run interrupted, gets at the next run's start what it had not acknowledged (without
    it, its new files came a run late, and its deletions never)."""
    now = time.time() if now is None else now
    rows = db.execute("SELECT reader, session, seq FROM acks WHERE epoch=? AND at>=?", (epoch, now - READER_EXPIRY))
    out = {r: (sess, seq) for r, sess, seq in rows}
    for r, sess, seq in _silent_but_there(db, epoch, now):
        out[r] = (sess, seq)
    return out


def behind(db: sqlite3.Connection, epoch: str, since: float, last: int) -> dict[str, tuple[int, float]]:
    """Readers heard from since ``since`` that have not acknowledged up to ``last``: their seq and time."""
    rows = db.execute("SELECT reader, seq, at FROM acks WHERE epoch=? AND at>=? AND seq<?", (epoch, since, last))
    return {r: (seq, at) for r, seq, at in rows}


def forget_stale(db: sqlite3.Connection, epoch: str, now: float) -> int:
    """Drop readers silent for READER_EXPIRY, and those of another epoch (inside the caller's transaction)."""
    return db.execute("DELETE FROM acks WHERE at<? OR epoch<>?", (now - READER_EXPIRY, epoch)).rowcount


class Known:
    """A reader as its writer's ``acks`` table knows it (a plain class: a dataclass's import costs every stage's
    start, tests/cli/test_startup.py)."""

    __slots__ = ("at", "epoch", "reader", "seq", "session", "through")

    def __init__(self, reader: str, epoch: str, seq: int, through: int | None, at: float, session: str):
        self.reader = reader  # its state file, as the reader wrote it (an absolute path)
        self.epoch = epoch  # our epoch it read lines of
        self.seq = seq  # the highest seq of ours it no longer needs
        self.through = through
        self.at = at  # when it last acknowledged (unix time)
        self.session = session


def known(db: sqlite3.Connection) -> list[Known]:
    """Every row of the table, whatever its age or epoch, by reader.  The file is untrusted: a name that is not
    UTF-8 comes back with surrogate escapes (forget takes it so), and a row whose numbers are not numbers is left
    out rather than shown as something it is not."""
    out = []
    for reader, epoch, seq, through, at, session in db.execute(
        "SELECT CAST(reader AS BLOB), CAST(epoch AS BLOB), seq, through, at, CAST(session AS BLOB) FROM acks "
        "ORDER BY reader"
    ):
        if not isinstance(reader, bytes) or type(seq) is not int or not isinstance(at, int | float):
            continue
        out.append(
            Known(
                reader.decode("utf-8", "surrogateescape"),
                bytes(epoch or b"").decode("utf-8", "replace"),
                seq,
                through if type(through) is int else None,
                float(at),
                bytes(session or b"").decode("utf-8", "replace"),
            )
        )
    return out


def forget(db: sqlite3.Connection, reader: str) -> bool:
    """Drop one reader's row (inside the caller's transaction): its writer keeps and re-sends nothing more for
    it.  False: no such reader.  ``reader`` as known() gives it (a name that is not UTF-8 included)."""
    raw = reader.encode("utf-8", "surrogateescape")
    return db.execute("DELETE FROM acks WHERE CAST(reader AS BLOB)=?", (raw,)).rowcount > 0


def state_gone(path: str) -> bool | None:
    """Whether a reader's state file is gone for sure: True when its name is not there but its directory is
    (so not an unmounted filesystem, nor a directory we may not look into); False when it is there; None when
    that cannot be told (a directory we may not search, a path that is no absolute path, any other error).
    Only names are looked up (lstat): nothing is opened."""
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        return None
    try:
        os.lstat(path)
        return False
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            return None
    try:
        return stat.S_ISDIR(os.stat(os.path.dirname(path)).st_mode) or None  # (/var/run: a link to a directory)
    except OSError:
        return None


def holder(reader: str) -> int | None:
    """A process holding the reader's state file (its lock, State._lock: the reader runs), else None."""
    if not isinstance(reader, str) or not os.path.isabs(reader) or "\0" in reader:
        return None
    return lock_holder(Path(reader))


def gone_behind(db: sqlite3.Connection, epoch: str, last: int) -> list[Known]:
    """Readers that count (our epoch, heard from within READER_EXPIRY), have not acknowledged up to ``last``, and
    whose state file is gone with no process holding it: what a start of ours re-sends for them, it re-sends for
    a reader that may never come (docs/durability.md, "A reader that never comes back")."""
    now = time.time()
    return [
        k
        for k in known(db)
        if k.epoch == epoch
        and k.seq < last
        and k.at >= now - READER_EXPIRY
        and state_gone(k.reader)
        and holder(k.reader) is None
    ]


def gone_warning(prog: str, state: str | os.PathLike[str], k: Known, last: int) -> str:
    """What a writer says when its start re-sent lines for a reader of gone_behind's."""
    reader = shown(k.reader)
    return (
        f"re-sent {last - k.seq} line(s) kept for reader {reader}, whose state file is gone; if it will not run "
        f"again: {prog} --state {shell_word(os.fspath(state))} --forget-reader {shell_word(k.reader)}"
    )


def shell_word(path: str) -> str:
    """``path`` as one shell word that gives its very bytes back in bash: quoted as usual, or, when it holds
    control characters or bytes that are not UTF-8 (shown escaped: ``shown``), as ``$'...'`` with each such byte
    ``\\xHH``, so that the command a warning prints can be pasted (the escaped name, quoted as it was shown, named
    no reader)."""
    if shown(path) == path:
        return shlex.quote(path)
    out = []
    for b in path.encode("utf-8", "surrogateescape"):
        c = chr(b)
        out.append(c if 0x20 <= b < 0x7F and c not in "'\\" else f"\\x{b:02x}")
    return "$'" + "".join(out) + "'"


def shown(path: str) -> str:
    """A reader's name as printed: the acks table is untrusted, and a name with control characters (a terminal's
    escape sequences, a newline making a line of its own) is shown escaped."""
    return display(path.encode("utf-8", "surrogateescape"))


def lowest(db: sqlite3.Connection) -> int | None:
    """The lowest seq any reader acknowledged (None: no reader, or no acks table: not a writer's state)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='acks'").fetchone() is None:
        return None
    return db.execute("SELECT min(seq) FROM acks").fetchone()[0]


class Replays:
    """Writer side: notices readers that are new or restarted since we last looked
    (each reader process writes its own session token with its acknowledgements),
    says where to re-send from, and the tag (``hop.for``) that lines carry for a
    while after such a replay, so a waiting reader knows its replay has begun."""

    TAG_SECONDS = 30.0

    def __init__(self, db: sqlite3.Connection, epoch: str):
        self.db = db
        self.epoch = epoch
        self.seen: dict[str, tuple[str, int]] = {}  # empty: every reader is new to a starting writer
        self.tag: list[str] | None = None
        self._tag_until = 0.0
        self._looked = False  # due() has run once (at our start)

    def due(self) -> int | None:
        """The seq to re-send after, if some reader needs it (the tag is set then)."""
        current = sessions(self.db, self.epoch)
        # A session marked "-" is a reader process that knows it lost nothing (Acknowledger.lost_nothing): not
        # re-sent to when it shows up.  At our start every reader counts, marked or not: what a reader has not
        # acknowledged (lines of our last run that never reached it, say) goes again.
        quiet = self._looked
        self._looked = True
        fresh = [
            v for r, v in current.items() if self.seen.get(r, ("",))[0] != v[0] and not (quiet and v[0].startswith("-"))
        ]
        self.seen = current
        if not fresh:
            if self.tag and time.monotonic() > self._tag_until:
                self.tag = None
            return None
        self.tag = sorted(sess for sess, _ in fresh)
        self._tag_until = time.monotonic() + self.TAG_SECONDS
        return min(seq for _, seq in fresh)
