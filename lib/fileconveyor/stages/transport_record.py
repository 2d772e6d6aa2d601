"""``--record-db``: did fc-record delete this source file itself, after syncing it?

fc-record can delete source files once they are synced (the original's fileDeletionDelayAfterSync); fc-watch
then reports them ``deleted`` like any other deletion.  Propagating that deletion would remove the only copy
left, on the server, so fc-transport looks the path up in fc-record's ``source_deletions`` table (read-only)
and, when fc-record deleted it, keeps the remote file and emits ``transported: "kept"``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from urllib.parse import quote


class RecordDb:
    """fc-record's database, opened read-only on first use (it may not exist yet when we start)."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()  # one connection, shared by the worker threads
        self.conn: sqlite3.Connection | None = None
        self.has_server = False

    def _open(self) -> sqlite3.Connection | None:
        if self.conn is None and os.path.exists(self.path):
            uri = f"file:{quote(os.path.abspath(self.path))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            cols = {row[1] for row in conn.execute("PRAGMA table_info(source_deletions)")}
            if "input_file" not in cols or "deleted_at" not in cols:
                conn.close()
                return None  # fc-record has not created its table yet: ask again next time
            self.has_server = "server" in cols
            self.conn = conn
        return self.conn

    def kept(self, path: bytes, server: str) -> bool:
        """Whether fc-record deleted ``path`` from the source (for ``server``, or for every server)."""
        try:
            text: object = path.decode("utf-8")
        except UnicodeDecodeError:
            text = path  # sqlite cannot bind lone surrogates; fc-record stores such names as bytes
        with self.lock:
            conn = self._open()
            if conn is None:
                return False
            sql = "SELECT deleted_at FROM source_deletions WHERE input_file IN (?, ?)"
            args: list[object] = [text, path]
            if self.has_server:
                sql += " AND (server=? OR server IS NULL OR server='')"
                args.append(server)
            rows = conn.execute(sql + " ORDER BY rowid DESC LIMIT 1", args).fetchall()
        return bool(rows) and rows[0][0] is not None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None
