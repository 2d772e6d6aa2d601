"""Writes and deletes beneath the destination root only, never through a symbolic link inside it.

A directory inside the destination root may be a symbolic link (made by another user who writes there, or by
an admin long ago) pointing anywhere; following it would put files, or delete them, outside the root.  So the
transporters that have directories look at each directory below the root before they write or delete beneath
it: file:// opens them one by one relative to the one above, without following links (local.py); sftp:// asks
the server for lstat (sftp.py); ftp:// reads the listing of the directory above (ftp_list.py).  A link where a
directory should be is a permanent error that names it, and is left alone (it is the user's).  The root itself
may be a link: that is where the user asked the files to go.

What has been found to be a real directory is remembered for DIR_TTL seconds per connection, so that a batch of
files in one directory pays for the look once; after that it is looked at again, so a directory replaced by a
link (or a root link switched to a new release) is noticed within that time.

``CheckedDirs`` is the walk down those directories for the transporters that look over the wire (ftp, sftp):
what they remember, what a link or a file in the way means, and removing an empty directory; each says only
what one entry is (``_entry_kind``) and how the server removes a directory (``_remove_dir``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .base import PermanentError, Transporter, join
from .destination import Destination

V = TypeVar("V")

# What an entry below the root is.  UNKNOWN: the server's answer cannot tell (an FTP listing not in ls's format);
# it is taken as a directory, as FTP always did (README).
DIR, FILE, LINK, MISSING, UNKNOWN = "dir", "file", "link", "missing", "unknown"

DIR_TTL = 2.0  # seconds a directory found to be a real directory is trusted without a new look
DIR_LIMIT = 64  # directories remembered per connection (file:// holds a descriptor for each)


class DirCache(Generic[V]):
    """Directories below the root (relative paths, b"" for the root) known to be real, with what the
    transporter keeps for each (a descriptor, or True), for DIR_TTL seconds; ``release`` frees a value."""

    def __init__(self, release: Callable[[V], None] | None = None, limit: int = DIR_LIMIT):
        self.release, self.limit = release, limit
        self._entries: dict[bytes, tuple[V, float]] = {}

    def get(self, key: bytes) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._forget(key)
            return None
        return entry[0]

    def put(self, key: bytes, value: V) -> None:
        if key in self._entries:
            self._forget(key)
        elif len(self._entries) >= self.limit:
            # the oldest goes (a dict keeps its order): a walk down a deep tree keeps the deepest, where the next
            # look starts (clearing all made each removal of a deep file's directories walk from the root again)
            self._forget(next(iter(self._entries)))
        self._entries[key] = (value, time.monotonic() + DIR_TTL)

    def clear(self) -> None:
        for key in list(self._entries):
            self._forget(key)

    def forget_from(self, key: bytes) -> None:
        """Forget ``key`` and every directory beneath it (the ones above stay known)."""
        below = key + b"/"
        for k in [k for k in self._entries if k == key or k.startswith(below)]:
            self._forget(k)

    def _forget(self, key: bytes) -> None:
        value, _ = self._entries.pop(key)
        if self.release is not None:
            self.release(value)


def parent_and_name(rel: bytes) -> tuple[bytes, bytes]:
    """b"a/b/c.css" -> (b"a/b", b"c.css"); b"c.css" -> (b"", b"c.css")."""
    head, _, name = rel.rpartition(b"/")
    return head, name


def link_refused(path: bytes) -> PermanentError:
    """The error for a symbolic link found where a directory is expected."""
    return PermanentError(
        f"{os.fsdecode(path)!r} is a symbolic link, not a directory: File Conveyor never writes or deletes "
        f"through a link inside the destination (it is left as it is; make it a real directory, or make the "
        f"destination root point where it points)"
    )


def not_a_directory(path: bytes) -> PermanentError:
    return PermanentError(f"{os.fsdecode(path)!r} is in the way: it is a file, not a directory")


class CheckedDirs(Transporter):
    """A transporter that looks at each directory below the root over the wire before writing or deleting
    beneath it (ftp: a listing of the one above, sftp: lstat)."""

    has_dirs = True

    def __init__(self, dest: Destination):
        super().__init__(dest)
        self.dirs: DirCache[bool] = DirCache()  # directories below the root found real

    def _entry_kind(self, rel: bytes, create: bool) -> str:
        """What directory ``rel`` (below the root) is: DIR, FILE, LINK, MISSING or UNKNOWN; when ``create``, a
        missing one is made first (and added to ``made_dirs``)."""
        raise NotImplementedError

    def _remove_dir(self, path: bytes) -> bool:
        """Remove the directory ``path``; False when the server refuses (not empty, or not allowed)."""
        raise NotImplementedError

    def _check_dirs(self, rel: bytes, create: bool) -> bool:
        """Whether each directory of ``rel`` below the root is a real directory (remembered for DIR_TTL); missing
        ones are made when ``create``, else the answer is False.  A link where a directory should be:
        PermanentError.  The server resolves the path again at each request: a directory swapped for a link in
        between is a race neither protocol gives a way to close (README)."""
        below: list[bytes] = []  # up to the deepest directory remembered, then down: a loop, never a recursion
        while rel and not self.dirs.get(rel):
            below.append(rel)
            rel = parent_and_name(rel)[0]
        for sub in reversed(below):
            kind = self._entry_kind(sub, create)
            if kind == LINK:
                raise link_refused(join(self.dest.root, sub))
            if kind == FILE and create:
                raise not_a_directory(join(self.dest.root, sub))
            if kind in (FILE, MISSING):
                return False
            self.dirs.put(sub, True)  # a directory, or an answer that cannot tell (UNKNOWN)
        return True

    def _rmdir(self, rel: bytes) -> bool:
        # What was remembered of it (and beneath it) goes: it is looked at afresh, just before.  The directories
        # above stay known, as for an upload: a deletion removing a deep file's empty directories one by one,
        # deepest first, looked at each one above again (1,100 levels: 4.5 minutes over SFTP).
        self.dirs.forget_from(rel)
        try:
            if not self._check_dirs(rel, create=False):  # gone, or a file: nothing to remove
                return True
            return self._remove_dir(join(self.dest.root, rel))
        except PermanentError:  # a link where the directory was: not ours to remove
            return False
        finally:
            self.dirs.forget_from(rel)
