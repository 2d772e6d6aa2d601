"""``--record-db``: did fc-record delete this source file itself, after syncing it?

fc-record can delete source files once they are synced (the original's fileDeletionDelayAfterSync); fc-watch
then reports them ``deleted`` like any other deletion.  Propagating that deletion would remove the only copy
left, on the server, so fc-transport asks fc-record's record (read-only, with fc-record's own test,
records.deleted_by_record) and, when fc-record deleted exactly that version, keeps the remote file and emits
``transported: "kept"``.

It also names what a deletion removes when this fc-transport's state has no upload of the path (``remote``): the
name the record holds for that path and server, uploaded under an earlier state, by another worker or by the old
daemon.  A deletion removes only a name File Conveyor is known to have put there (stage.py, ``_delete``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from ...errors import ConfigError, RetryableError
from ...records import Reader, db_key, deleted_by_record, exists, is_url, open_reader
from ...transporters.base import PermanentError, TransientError


class RecordDb:
    """fc-record's record, opened read-only on first use (a file may not exist yet when we start: fc-conveyor's
    first run starts fc-record beside us).  A postgresql:// one is opened at once, so a refused login stops the
    command before any event (exit 3); so is a file that is there, so that a path that is no record (a directory,
    another file: a slip of the user's) stops it too (exit 2) instead of failing every deletion.  A database
    server that does not answer (down, restarting: RetryableError) stops nothing: uploads need no record, and the
    deletions that ask it wait for it (_translated); ``unreachable`` says why, for the stage to warn."""

    def __init__(self, target: str):
        self.target = target
        self.lock = threading.Lock()  # one connection, shared by the worker threads
        if not is_url(target) and os.path.exists(target) and not os.path.isfile(target):
            raise ConfigError(f"--record-db {target}: not a file (fc-record's SQLite file or a postgresql:// URL)")
        self.conn: Reader | None = None
        self.unreachable: str | None = None
        if exists(target):
            try:
                self.conn = open_reader(target)
            except RetryableError as exc:  # (opened again at the first deletion that asks it)
                self.unreachable = str(exc)

    def missing(self) -> bool:
        """Whether the record is a file that is not there (yet, or a misspelt path)."""
        return self.conn is None and not exists(self.target)

    def _reader(self) -> Reader | None:
        """The connection, opened now if the file has appeared; None while it is not there."""
        if self.conn is None:
            if not exists(self.target):
                return None
            self.conn = open_reader(self.target)
        return self.conn

    def kept(self, event: dict) -> bool:
        """Whether ``event`` (a ``deleted`` event) reports a deletion fc-record made after sync."""
        with self.lock, _translated():
            conn = self._reader()
            return False if conn is None else deleted_by_record(conn, event)  # none: fc-record deleted nothing

    def remote(self, path: bytes, server: str) -> bytes | None:
        """The name the record says ``path`` was uploaded under on ``server`` (None: it has no such row).
        ValueError for a row's name that is not one (records.model.remote_name)."""
        with self.lock, _translated():
            conn = self._reader()
            return None if conn is None else conn.remote(db_key(path), server)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """A record's failure as a deletion's: the database server down waits, as for a destination (TransientError);
    a record that cannot be read (a file that is no database, or not fc-record's) fails the deletion, kept for
    --retry-failed (PermanentError), instead of the stage's 'unexpected failure'."""
    try:
        yield
    except RetryableError as exc:
        raise TransientError(f"--record-db: {exc}") from None
    except ConfigError as exc:
        raise PermanentError(f"--record-db: {exc}") from None
