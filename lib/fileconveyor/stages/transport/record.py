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
import threading

from ...errors import RetryableError
from ...records import Reader, db_key, deleted_by_record, exists, is_url, open_reader
from ...transporters.base import TransientError


class RecordDb:
    """fc-record's record, opened read-only on first use (a file may not exist yet when we start).  A
    postgresql:// one is opened at once, so a refused login stops the command before any event (exit 3)."""

    def __init__(self, target: str):
        self.target = target
        self.lock = threading.Lock()  # one connection, shared by the worker threads
        self.conn: Reader | None = open_reader(target) if is_url(target) else None

    def kept(self, event: dict) -> bool:
        """Whether ``event`` (a ``deleted`` event) reports a deletion fc-record made after sync."""
        with self.lock:
            try:
                if self.conn is None:
                    if not exists(self.target):
                        return False  # fc-record has not run yet: it deleted nothing
                    self.conn = open_reader(self.target)
                return deleted_by_record(self.conn, event)
            except RetryableError as exc:  # the database server down: the deletion waits, as for a destination
                raise TransientError(f"--record-db: {exc}") from None

    def remote(self, path: bytes, server: str) -> bytes | None:
        """The name the record says ``path`` was uploaded under on ``server`` (None: it has no such row)."""
        with self.lock:
            try:
                if self.conn is None:
                    if not exists(self.target):
                        return None
                    self.conn = open_reader(self.target)
                return self.conn.remote(db_key(path), server)
            except RetryableError as exc:
                raise TransientError(f"--record-db: {exc}") from None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
