"""Reaching a file beneath a root directory without ever leaving it.

A path ``root + "/" + rel`` taken from an event is resolved by the kernel, which
follows every symlink on the way and every ``..``: a ``rel`` of ``../x``, or a
directory inside the tree swapped for a symlink, lands outside the root.  Here
the root is opened once and each directory of ``rel`` is opened relative to the
previous one with O_NOFOLLOW, so the directory file descriptor handed back is
really beneath the root, and the last name is looked at and acted on relative to
it (``fstatat``/``unlinkat`` with that descriptor): a symlink anywhere below the
root, a ``..`` or an empty step ends the walk instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class OutsideRoot(ValueError):
    """``rel`` does not name a file beneath the root by plain directories (``..``, a symlink, not a directory)."""


def rel_parts(rel: bytes) -> list[bytes]:
    """The names of ``rel``, a relative path under a root; OutsideRoot for an absolute path, an empty,
    ``.`` or ``..`` step, or a NUL byte (no file beneath a root is named so by fc-watch)."""
    parts = rel.split(b"/")
    if not rel or rel.startswith(b"/") or b"\0" in rel or any(p in (b"", b".", b"..") for p in parts):
        raise OutsideRoot("not a plain relative path (empty, absolute, or with an empty, '.' or '..' step)")
    return parts


@contextlib.contextmanager
def parent_dir(root: bytes, rel: bytes) -> Iterator[tuple[int, bytes]]:
    """(descriptor of the directory holding ``rel``, its last name), that directory reached from ``root``
    through real directories only.  The root itself may be a symlink (it is the user's setting); nothing
    below it is followed.  OutsideRoot when the walk meets a symlink or a non-directory; OSError as usual
    (FileNotFoundError: a directory on the way is gone)."""
    *dirs, name = rel_parts(rel)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in dirs:
            try:
                nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    shown = os.fsdecode(part)
                    raise OutsideRoot(f"{shown!r} on the way is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = nxt
        yield fd, name
    finally:
        os.close(fd)
