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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .base import PermanentError

V = TypeVar("V")

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
            self.clear()  # crude but cheap; a batch works in a few directories at a time
        self._entries[key] = (value, time.monotonic() + DIR_TTL)

    def clear(self) -> None:
        for key in list(self._entries):
            self._forget(key)

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
