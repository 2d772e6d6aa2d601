"""Quarantine: stored events a stage cannot get through, set aside instead of retried for ever.

A line is validated before it is stored (events.decode), so a stored event that keeps
failing is one the stage itself cannot carry: a bug in a stage or a plugin (its commit
raised), or a line an older version stored that no longer decodes.  Retrying such an
event would fail the same way on every round and every restart, and hold up the
events of its path behind it.  After QUARANTINE_AFTER attempts it moves, in the
transaction that gives up on it, from the inbox to the ``quarantine`` table of the
same state file, with the reason; ``fc-record --status --state-file FILE`` and
``fc-conveyor --status`` count it.  A destination that is down is not a reason: those
items are retried (``Retry``) and never set aside.

What to do with one: ``sqlite3 STATE "SELECT reason, line FROM quarantine"`` shows
them; after a fix, pipe the lines into the stage again, then delete the rows.
"""

from __future__ import annotations

import sqlite3
import time

from ..errors import FCError

QUARANTINE_AFTER = 3  # attempts at an item whose commit raised before it is set aside
FIRST_DELAY = 0.2  # seconds before such an item is tried again; doubled each time

MIGRATION = """
    CREATE TABLE quarantine(
        id INTEGER PRIMARY KEY,
        line BLOB NOT NULL,
        lane TEXT NOT NULL,
        key BLOB NOT NULL,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    -- attempts that failed inside the stage (not at the destination): counted toward quarantine
    ALTER TABLE inbox ADD COLUMN internal INTEGER NOT NULL DEFAULT 0
"""


def put(db: sqlite3.Connection, line: bytes, lane: str, key: bytes, attempts: int, reason: str) -> None:
    """Set one event aside (inside the caller's transaction, which also removes it from the inbox)."""
    db.execute(
        "INSERT INTO quarantine(line, lane, key, attempts, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
        (bytes(line), lane, bytes(key), attempts, reason, time.time()),
    )


def is_bug(exc: BaseException) -> bool:
    """An exception that says nothing about the world (disk, locks, destination): a stage that
    cannot handle this event.  Disk full, a busy database and our own errors are not."""
    if isinstance(exc, FCError | sqlite3.OperationalError):
        return False
    if isinstance(exc, sqlite3.DatabaseError):  # a corrupt file is not the event's fault; misuse is a bug
        return isinstance(exc, sqlite3.IntegrityError | sqlite3.InterfaceError | sqlite3.ProgrammingError)
    return isinstance(exc, Exception)
