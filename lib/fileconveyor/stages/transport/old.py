"""Deleting superseded remote files later (``--delete-old-after SECONDS``).

When a modification changes the transported name (unique_filename.MD5: ``a_3f2c.css`` becomes ``a_9b1e.css``),
the old remote file is deleted once the new one is up, and with a delay, pages cached with the old URL keep
working meanwhile.  Each pending deletion is a row of the stage's ``old_deletions`` table, written in the
transaction that records the upload, so it survives a crash or a restart whatever the delay.

A single thread here carries them out when due, over its own connection to each destination (the workers'
connections stay busy with uploads).  Before deleting it checks, under the name's lock, that no source path
uses that remote name again (the file changed back to a content seen before): that name is live, not old.
Each deletion carried out is reported (``emit``): the stage writes an event for it and removes its row in one
transaction, so a crash before that repeats the delete (a missing file counts as deleted) and the event.  Rows
finished without a deletion (the name in use again, a permanent error) are removed by the stage in its next
transaction.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from ... import backoff
from ...delivery.timed import TimedWork
from ...plain import Value
from ...transporters import AuthError, PermanentError, TransientError, Transporter

RETRY_START = 2.0
RETRY_MAX = 300.0


@functools.total_ordering
class Pending(Value):
    """An old name to delete at ``due``: ordered (and equal) by ``(due, row)``, for the heap of TimedWork."""

    _fields = ("due", "row")

    def __init__(
        self,
        due: float,
        row: int,
        server: str,
        remote: bytes,
        path: bytes = b"",  # the source path whose name it was
        source: bytes = b"",  # the source fields of the superseding event (JSON)
        tries: int = 0,
    ):
        self.due = due
        self.row = row
        self.server = server
        self.remote = remote
        self.path = path
        self.source = source
        self.tries = tries

    def __lt__(self, other: Pending) -> bool:
        if other.__class__ is not Pending:
            return NotImplemented
        return (self.due, self.row) < (other.due, other.row)

    def __repr__(self) -> str:
        return f"Pending(due={self.due!r}, row={self.row!r}, server={self.server!r}, remote={self.remote!r})"


class OldFileDeleter(TimedWork[Pending]):
    """A thread that deletes pending old remote files when they are due."""

    thread_name = "old-files"

    def __init__(
        self,
        make: Callable[[str], Transporter],
        in_use: Callable[[str, bytes], bool],
        lock_for: Callable[[str, bytes], threading.Lock],
        warn: Callable[[str], None],
        info: Callable[[str], None],
        emit: Callable[[Pending, list[str]], None] = lambda p, purge: None,
    ):
        super().__init__()
        self.make, self.in_use, self.lock_for, self.warn, self.info = make, in_use, lock_for, warn, info
        self.emit = emit  # called after each deletion, with the CDN paths to invalidate
        self.done: list[int] = []  # rows finished, to remove from the table
        self.deleted = 0
        self.transporters: dict[str, Transporter] = {}

    def add(self, p: Pending) -> None:
        self.schedule(p.due, p)

    def take_done(self) -> list[int]:
        with self.cond:
            done, self.done = self.done, []
        return done

    def give_back(self, rows: list[int]) -> None:
        """Rows taken (take_done) by a transaction that was rolled back: still to remove."""
        with self.cond:
            self.done[:0] = rows

    def close(self) -> None:
        super().close()
        for tp in self.transporters.values():
            tp.close()

    def _do(self, p: Pending) -> float | None:
        if self._delete(p):
            return p.due
        return None

    def _delete(self, p: Pending) -> bool:
        """Delete one old file; True to try again later."""
        shown = p.remote.decode("utf-8", "replace")
        with self.lock_for(p.server, p.remote):
            if self.in_use(p.server, p.remote):
                self.info(f"{p.server}: {shown} is in use again, not deleted")
                self._finished(p)
                return False
            try:
                tp = self.transporters.get(p.server)
                if tp is None:
                    tp = self.transporters[p.server] = self.make(p.server)
                tp.delete(p.remote)
                purge = tp.invalidation_paths(p.remote)
            except TransientError as exc:
                p.tries += 1
                p.due = time.time() + backoff.delay(p.tries, RETRY_START, RETRY_MAX)
                self.info(f"deleting old {shown}: {exc}; will retry")
                return True
            except (PermanentError, AuthError) as exc:
                self.warn(f"could not delete old remote file {shown}: {exc}")
                self._finished(p)
                return False
            except KeyError:
                self.warn(f"old remote file {shown} is on {p.server!r}, not a destination now: left in place")
                self._finished(p)
                return False
            # still under the name's lock: an upload of this name waits until the event is on its way
            self.emit(p, purge)
        self.deleted += 1
        self.info(f"{p.server}: deleted old {shown}")
        return False

    def _finished(self, p: Pending) -> None:
        with self.cond:
            self.done.append(p.row)
