"""``--record-db``: did fc-record delete this source file itself, after syncing it?

fc-record can delete source files once they are synced (the original's fileDeletionDelayAfterSync); fc-watch
then reports them ``deleted`` like any other deletion.  Propagating that deletion would remove the only copy
left, on the server, so fc-transport asks fc-record's database (read-only, with fc-record's own test,
records.deleted_by_record) and, when fc-record deleted exactly that version, keeps the remote file and emits
``transported: "kept"``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from urllib.parse import quote

from ...records import deleted_by_record


class RecordDb:
    """fc-record's database, opened read-only on first use (it may not exist yet when we start)."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()  # one connection, shared by the worker threads
        self.conn: sqlite3.Connection | None = None

    def kept(self, event: dict) -> bool:
        """Whether ``event`` (a ``deleted`` event) reports a deletion fc-record made after sync."""
        with self.lock:
            if self.conn is None:
                if not os.path.exists(self.path):
                    return False  # fc-record has not run yet: it deleted nothing
                uri = f"file:{quote(os.path.abspath(self.path))}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            return deleted_by_record(self.conn, event)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None
