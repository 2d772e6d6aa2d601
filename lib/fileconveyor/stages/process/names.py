"""What fc-process checks of an event's file when its chain only renames (issue 18: the per-line cost).

A chain of ``name_only`` steps (``filename.*``, ``unique_filename.Mtime``) reads no byte of the file and writes
none: its output line is the event as read with ``name`` and ``processed`` added, the same ``root``, ``rel`` and
``path``, nothing a reader did not have to trust already.  The bytes are read by the transporter alone, which
opens the file beneath its root once more and checks it is the event's file before sending any
(sourcefile.open_source).  fc-process still tells the outcomes a worker would (a vanished or replaced file
dropped, a link out of the root or a FIFO refused: tests/process/test_process.py), but it opened every file for
that (openat2 beneath the root, fstat, close): the dearest part of its main thread's work per line.

``NameChecks.plain`` answers the common case with one ``fstatat`` and no open: the event's directory is opened
beneath its root once per round (``beneath.open_file``, the same walk a source file gets: a symlink followed only
while it stays beneath the root), and the file is looked at in it without following a link.  It says True only
when the file is a regular file, the event's by inode and size, that we may read by its mode bits; anything else
(a link, gone, another file, a name not plain, an event that needs normalizing, a directory that leads out) is
False, and the caller runs the full check (sourcefile.check_source) for its exact outcome and message.  So:

- nothing is read, so nothing can leak, and nothing is written: the check's outcome only decides whether the event
  goes on or is dropped or failed here rather than by the transporter (which checks again);
- the directory's resolution is shared by a round's events, as the root's already was (sourcefile.Roots): a
  directory swapped for a link after it was opened is seen from the next round on, as a file swapped after the
  check always was;
- what an open would also have refused besides the mode bits (an ACL entry, a security module) is found by the
  transporter when it opens the file, and reported there as an event with ``error``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

from ... import beneath
from ...sourcefile import Roots, SourceGone, SourceRefused, from_event
from ...sourcefile import Source as SourceSpec


class NameChecks:
    """The per-file check of a rename-only chain (see the module doc), with the directories of a round held open;
    ``close`` at the end of the round (main thread only)."""

    MAX = 256  # directories kept at once (events may name endless ones): all closed past it

    def __init__(self, roots: Roots, confine: Callable[[Mapping[str, Any], SourceSpec], SourceSpec]):
        self.roots = roots  # the stage's roots of this round
        self.confine = confine  # the stage's --source and --follow-symlinks rules for an event's Source
        # (source name, root, directory of rel) as the event has them -> (fd of that directory, the event path
        # up to the file's name)
        self.dirs: dict[tuple[str | None, str, str], tuple[int, bytes]] = {}
        self.euid = os.geteuid()
        self.groups = {os.getegid(), *os.getgroups()}

    def plain(self, ev: Mapping[str, Any], path: bytes) -> bool:
        """Whether the file of ``ev`` (whose ``path`` is ``path``) is, now, the regular file the event describes,
        beneath its root, readable by us: what sourcefile.check_source finds of it when it raises nothing.
        False is no verdict: the caller runs that check."""
        rel, root, source = ev.get("rel"), ev.get("root"), ev.get("source")
        if type(rel) is not str or type(root) is not str or "rel_b64" in ev or "root_b64" in ev:
            return False  # (a name that is not UTF-8, a field missing: the full check says what it is)
        if source is not None and type(source) is not str:
            return False
        # (a name "", "." or ".." is no regular file, and one holding NUL no name: S_ISREG and stat say so below)
        head, _, name = rel.rpartition("/")
        key = (source, root, head)
        entry = self.dirs.get(key)
        if entry is None:
            entry = self._open(ev, key)
            if entry is None:
                return False
        dfd, prefix = entry
        try:
            raw = name.encode()
        except UnicodeEncodeError:  # a lone surrogate: no file name (the full check refuses the event)
            return False
        if path != prefix + raw:  # path is root + rel, as from_event wants (the same root and head as checked)
            return False
        try:
            st = os.stat(raw, dir_fd=dfd, follow_symlinks=False)
        except (OSError, ValueError):
            return False
        if not stat.S_ISREG(st.st_mode):  # a link (followed, or refused, by the full check), a FIFO, a directory
            return False
        ino, size = ev.get("ino"), ev.get("size")
        if (ino is not None and (type(ino) is not int or ino != st.st_ino)) or (
            size is not None and (type(size) is not int or size != st.st_size)
        ):
            return False
        return self.euid == 0 or self._readable(st)  # (root reads anything)

    def _readable(self, st: os.stat_result) -> bool:
        """Whether the mode bits let us read the file: an open's EACCES, without the open."""
        if st.st_uid == self.euid:
            return bool(st.st_mode & stat.S_IRUSR)
        if st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IRGRP)
        return bool(st.st_mode & stat.S_IROTH)

    def _open(self, ev: Mapping[str, Any], key: tuple[str | None, str, str]) -> tuple[int, bytes] | None:
        """The directory of the event's file, opened beneath its root, with the path up to the file's name; None
        when this event is not a plain case (the full check then decides it, and nothing is kept)."""
        try:
            base = from_event(ev)  # root absolute, rel plain, path = root + "/" + rel
            src = self.confine(ev, base)  # the root it may be read beneath (--source)
        except (SourceRefused, ValueError):  # (EventError is a ValueError)
            return None
        if src.work:
            return None
        head, _, name = src.rel.rpartition(b"/")
        try:
            root = self.roots.open(src)
            dfd = beneath.open_file(root, src.root, head, beneath.PATH_FLAGS) if head else os.dup(root)
        except (OSError, ValueError, SourceRefused, SourceGone):  # (beneath.OutsideRoot is a ValueError; the root gone)
            return None
        if len(self.dirs) >= self.MAX:
            self.close()
        # (later events of this key have the same root and head: their path is this prefix and their name)
        entry = self.dirs[key] = (dfd, base.path[: len(base.path) - len(name)])
        return entry

    def close(self) -> None:
        dirs, self.dirs = self.dirs, {}
        for dfd, _ in dirs.values():
            os.close(dfd)
