"""Which symlinks fc-watch publishes: the rule, in one place for the scan and live hints.

The tree is published on the public internet and written by others (uploads, deploys),
so a link is treated the way a careful web server treats one:

- a regular file reached without crossing a symlink is the tree's own;
- a symlink to a regular file counts as that file only when the file's real path lies
  beneath the source root, or beneath the target of a symlinked directory followed on
  the way to it (``--follow-symlinks``).  Otherwise it is *skipped*: never published,
  one warning, and its event says why (docs/events.md, "Symlinks");
- a symlinked directory is entered only with ``--follow-symlinks``, and never when it
  leads back into one of its own ancestors, or to a directory that contains the root
  or a followed link's target (``parent -> ..``, ``all -> /``: the tree again, then the
  whole machine), or into a pseudo-filesystem (/proc, /sys, /dev and their kind, where
  ``/proc/self/root`` leads to / again and files are not content).  Such a link is
  refused with one warning (``refused_dir``).  Without the flag nothing below it is in
  the tree; a directory swapped for a symlink is a directory gone;
- a dangling link, a loop of links, a link to a FIFO or a device: not a file, no event.

Only symlinks cost a realpath(): the lstat that the walk does anyway tells a regular
file from a link, and a regular file in a directory entered without following a link
is inside by construction.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import sys
from typing import NamedTuple

from ..events import display, join

OUTSIDE = "symlink-outside-root"  # the `skipped` reason of an event (docs/events.md)
UNKNOWN = (-1, -1, -1)  # cannot tell (permission denied on the way): absence is not proven
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class Skipped(NamedTuple):
    """A symlink leading outside what may be published: its own lstat (never the target's),
    so that a rescan recognises the same link and says nothing more about it."""

    size: int
    mtime_ns: int
    ino: int


def within(real: bytes, bases: tuple[bytes, ...]) -> bool:
    """``real`` (a realpath) is one of ``bases`` (realpaths) or beneath one."""
    return any(real == b or real.startswith(b if b.endswith(b"/") else b + b"/") for b in bases)


def link_inside(path: bytes, bases: tuple[bytes, ...]) -> bool:
    return within(os.path.realpath(path), bases)


# Kernel views, not stored files: walking them never ends (/proc/self/root is /) and
# their "files" are the machine's secrets.  Paths for the usual mounts, statfs magic
# numbers (linux/magic.h) for the same kinds mounted elsewhere (a chroot's /proc).
_PSEUDO_DIRS = (b"/proc", b"/sys", b"/dev")
_PSEUDO_MAGIC = frozenset(
    {
        0x9FA0,  # proc
        0x62656572,  # sysfs
        0x1CD1,  # devpts
        0x27E0EB,  # cgroup
        0x63677270,  # cgroup2
        0x64626720,  # debugfs
        0x74726163,  # tracefs
        0x73636673,  # securityfs
        0xCAFE4A11,  # bpf
        0x6E736673,  # nsfs
        0x42494E4D,  # binfmt_misc
        0x67596969,  # rpc_pipefs
        0xDE5E81E4,  # efivarfs
        0x19800202,  # mqueue
        0x6165676C,  # pstore
        0x50495045,  # pipefs
        0x534F434B,  # sockfs
    }
)


def _fs_magic(path: bytes) -> int | None:
    """statfs(2)'s f_type (Linux: the first field, a long); None where unknown."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here: only a followed directory link needs it, and fc-watch does not load it otherwise

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.statfs(path, buf) != 0:
            return None
        return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def refused_dir(real: bytes, bases: tuple[bytes, ...]) -> str | None:
    """Why a symlinked directory whose target is ``real`` (a realpath) must not be
    entered with --follow-symlinks, or None: it contains the root or a followed link's
    target (``bases``: the walk would go round again), or it is a pseudo-filesystem."""
    if any(within(b, (real,)) for b in bases):
        return "which contains the source root or a directory the walk is in (a loop)"
    if within(real, _PSEUDO_DIRS) or _fs_magic(real) in _PSEUDO_MAGIC:
        return "on a pseudo-filesystem"
    return None


def refused_message(real: bytes, why: str) -> str:
    """The strerror of the warning for a refused directory link (reported as unreadable)."""
    return f"a symlink to {display(real)}, {why}: not followed"


def resolve(root: bytes, rel: bytes, follow_symlinks: bool) -> tuple[int, int, int] | Skipped | None:
    """What file ``rel`` of ``root`` is now, judged as a walk of the tree would find it:
    ``(size, mtime_ns, ino)`` of a file to publish, ``Skipped`` for a symlink leading
    outside, None when it is not a file of the tree (gone, not regular, below a
    symlinked directory that is not followed), UNKNOWN when a directory on the way
    cannot be searched.

    The directories on the way are looked at one by one with lstat, as the walk goes,
    so a directory swapped for a symlink is noticed even when the path still opens;
    a path that is plainly gone costs one lstat."""
    base = root.rstrip(b"/") if root != b"/" else b""
    try:
        last = os.lstat(base + b"/" + rel)  # gone (the common case of a deletion): nothing more to look at
        parts = rel.split(b"/")
        bases: tuple[bytes, ...] | None = None  # realpaths, computed only when a link is met
        ancestors: set[tuple[int, int]] = set()
        if follow_symlinks:
            top = os.stat(root)
            ancestors.add((top.st_dev, top.st_ino))
        path = base
        for name in parts[:-1]:
            path += b"/" + name
            st = os.lstat(path)
            if stat_mod.S_ISLNK(st.st_mode):
                if not follow_symlinks:
                    return None  # the walk does not enter it: nothing below is in the tree
                st = os.stat(path)
                ident = (st.st_dev, st.st_ino)
                if not stat_mod.S_ISDIR(st.st_mode) or ident in ancestors:
                    return None  # nor into a loop
                real = os.path.realpath(path)
                bases = bases or (os.path.realpath(root),)
                if refused_dir(real, bases) is not None:
                    return None  # nor into the root again, nor /proc
                if not within(real, bases):
                    bases += (real,)
                ancestors.add(ident)
            elif stat_mod.S_ISDIR(st.st_mode):
                if follow_symlinks:
                    ancestors.add((st.st_dev, st.st_ino))
            else:
                return None
        path += b"/" + parts[-1]
        if stat_mod.S_ISREG(last.st_mode):
            return last.st_size, last.st_mtime_ns, last.st_ino
        if not stat_mod.S_ISLNK(last.st_mode):
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None  # dangling, or a loop of links: not a file
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        if not link_inside(path, bases or (os.path.realpath(root),)):
            return Skipped(last.st_size, last.st_mtime_ns, last.st_ino)
        return st.st_size, st.st_mtime_ns, st.st_ino
    except OSError as exc:
        return None if exc.errno in _GONE else UNKNOWN
    except ValueError:  # a NUL in a name from a hint: not a file
        return None


def skipped_message(root: bytes, rel: bytes, published: bool) -> str:
    """The one warning for a skipped link: what it is and where it leads."""
    path = join(root, rel)
    try:
        target = display(os.path.realpath(path))
    except (OSError, ValueError):
        target = "?"
    done = "its published copies are deleted" if published else "not published"
    return f"{display(path)} is a symlink to {target}, outside the source root: {done}"
