"""Deleting source files after sync (``fc-record --delete-source-after SECONDS``).

The schedule is the ``source_deletions`` table of the synced-files database: a row is written, in the transaction
that records the sync, once the file's version (size, mtime, inode) is synced to every required server.  A thread
here carries the rows out when due, so a restart (or a kill -9) loses no schedule: the rows are still there.

Before deleting, under a write transaction, it checks again that the file on disk is still that version (a file
modified after it was scheduled waits for its new version to be synced, which schedules it again) and that every
required server still has that version.  It then sets ``deleted_at`` and the ``event_id`` fc-watch will give the
deletion, commits, and only then unlinks: fc-transport (``--record-db``) recognises the deleted event by that id and
keeps the remote copies.  A kill between the commit and the unlink is finished on restart.

Events are forgeable, so their ``root`` and ``rel`` are not trusted to say where to delete: a file is deleted
only beneath a root given to fc-record (``--source NAME=DIR``, as given to fc-watch) whose name is the event's
``source`` and whose directory is the event's ``root``; it is reached from that root through real directories
only (beneath.py: no ``..``, no symlinked directory, as ``fc-watch --follow-symlinks`` may report), and its
identity (regular file, size, mtime, inode) is checked on the entry itself just before ``unlinkat``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Sequence

from ... import events as E
from ...beneath import OutsideRoot, parent_dir
from ...delivery.timed import TimedWork
from ...records import Deletion, key_bytes, open_writer
from ...roots import Source, allowed_root

OUTSIDE = "not beneath its source root"


def deleted_event_id(d: Deletion) -> str | None:
    """The id fc-watch gives the deletion of version ``d.version`` (events.event_id), when it can be known."""
    size, mtime_ns, ino = d.version
    if d.source is None or d.rel is None or size is None or mtime_ns is None or ino is None:
        return None
    return E.event_id(d.source, key_bytes(d.rel), "deleted", size, mtime_ns, ino)


class SourceDeleter(TimedWork["str | bytes"]):
    """A thread that deletes scheduled source files when they are due."""

    thread_name = "source-deletions"

    def __init__(
        self,
        db_path: str,
        owner: str,
        required: Callable[[], Sequence[str]],
        warn: Callable[[str], None],
        info: Callable[[str], None],
        sources: Sequence[Source] = (),
    ):
        super().__init__()
        self.rec = open_writer(db_path)  # its own connection: the main thread's stays free for records
        self.owner, self.required, self.warn, self.info = owner, required, warn, info
        self.sources = list(sources)  # the only roots it deletes beneath
        self.deleted = 0

    def start(self) -> None:
        """Load our pending rows (and finish deletions a kill interrupted), then start the thread."""
        for input_file, due_at, deleted_at in self.rec.owned(self.owner):
            if deleted_at is None:
                self.add(due_at, input_file)
            else:
                self._finish_interrupted(input_file)
        super().start()

    def add(self, due: float, input_file: str | bytes) -> None:
        self.schedule(due, input_file)

    def close(self) -> None:
        super().close()
        self.rec.close()

    def _do(self, input_file: str | bytes) -> None:
        self._delete(input_file)

    def _failed(self, input_file: str | bytes, exc: Exception) -> None:
        self.warn(f"deleting {E.display(key_bytes(input_file))} at the source: {exc}; retried at the next start")

    # -- one deletion ---------------------------------------------------------------------------

    def _delete(self, input_file: str | bytes) -> None:
        path = key_bytes(input_file)
        shown = E.display(path)
        with self.rec.tx():
            d = self.rec.deletion(input_file)
            if d is None or d.deleted_at is not None or d.owner != self.owner:
                return  # unscheduled meanwhile (a new version, the user's deletion), or done
            if d.due_at > time.time():
                self.add(d.due_at, input_file)  # rescheduled later by a replayed record
                return
            why = self._why_not(d, path)
            if why:
                self.rec.drop_deletion(input_file, d.version)
                self._refused(shown, why)
                return
            d.deleted_at = time.time()
            d.event_id = deleted_event_id(d)
            self.rec.put_deletion(d)
        # committed first: a deleted event arriving at fc-transport must find the row
        self._unlink(d, path)

    def _why_not(self, d: Deletion, path: bytes) -> str | None:
        synced = self.rec.versions(d.input_file)
        # the servers required now, too: one seen for the first time since the schedule counts
        missing = [s for s in sorted({*d.servers, *self.required()}) if synced.get(s) != d.version]
        if missing:
            return f"this version is no longer synced to {', '.join(missing)}"
        try:
            with self._entry(d) as (fd, name):
                return _not_that_version(d, os.stat(name, dir_fd=fd, follow_symlinks=False))
        except OutsideRoot as exc:
            return f"{OUTSIDE}: {exc}"
        except FileNotFoundError:
            return "it is gone already (that deletion is synced as usual)"
        except OSError as exc:
            return f"cannot stat it: {exc.strerror}"

    def _entry(self, d: Deletion) -> contextlib.AbstractContextManager[tuple[int, bytes]]:
        """The directory (descriptor) and name of ``d``'s file, beneath its source root; OutsideRoot if none."""
        root = allowed_root(self.sources, d.source, key_bytes(d.root) if d.root is not None else None)
        if root is None or d.rel is None:
            raise OutsideRoot(
                f"its source {d.source!r} with root {E.display(key_bytes(d.root or ''))!r} is no --source given "
                "to fc-record"
            )
        return parent_dir(root, key_bytes(d.rel))

    def _unlink(self, d: Deletion, path: bytes) -> None:
        shown = E.display(path)
        try:
            with self._entry(d) as (fd, name):
                # checked again on the entry itself, just before unlinkat: swapped since _why_not, it stays
                why = _not_that_version(d, os.stat(name, dir_fd=fd, follow_symlinks=False))
                if why is None:
                    os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            # someone else deleted it between our check and now: their deletion must be synced
            why = ""
        except OutsideRoot as exc:
            why = f"{OUTSIDE}: {exc}"
        except OSError as exc:
            self.warn(f"cannot delete {shown} at the source: {exc.strerror}; not retried")
            why = ""
        if why is not None:
            with self.rec.tx():
                self.rec.drop_deletion(d.input_file, d.version)
            if why:
                self._refused(shown, why)
            return
        self.deleted += 1
        waited = time.time() - d.scheduled_at
        self.info(f"deleted {shown} at the source, synced to {', '.join(d.servers)} {waited:.0f} s ago")

    def _refused(self, shown: str, why: str) -> None:
        # a file outside every source root is worth a warning: a forged event, or a symlinked directory
        (self.warn if why.startswith(OUTSIDE) else self.info)(f"{shown}: not deleted at the source: {why}")

    def _finish_interrupted(self, input_file: str | bytes) -> None:
        """A row marked deleted whose file is still there: killed between the commit and the unlink."""
        d = self.rec.deletion(input_file)
        if d is None or d.deleted_at is None:
            return
        why = self._why_not(d, key_bytes(input_file))
        if why is None:
            self._unlink(d, key_bytes(input_file))
        elif not why.startswith(("it is gone", "cannot stat")):
            # another file now (or one we may not delete): the old record must not hide its deletion
            with self.rec.tx():
                self.rec.drop_deletion(input_file, d.version)


def _not_that_version(d: Deletion, st: os.stat_result) -> str | None:
    """Why the entry ``st`` (not followed if a symlink) is not the version ``d`` schedules, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "it is no longer a regular file"
    if (st.st_size, st.st_mtime_ns, st.st_ino) != d.version:
        return "it was modified after it was scheduled; its new version is deleted once it is synced"
    return None
