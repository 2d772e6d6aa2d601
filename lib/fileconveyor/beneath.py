"""Reaching a file beneath a root directory without ever leaving it: the one home of that walk.

A path ``root + "/" + rel`` taken from an event is resolved by the kernel, which follows every symlink on the
way and every ``..``: a ``rel`` of ``../x``, or a directory inside the tree swapped for a symlink, lands outside
the root.  Here the root is opened once (it may itself be a symlink: it is the user's setting) and everything
below it is opened relative to a directory descriptor we hold, so what is reached is really beneath the root.
Three uses, one primitive (``open_dir``: one directory opened relative to the one above, never through a link):

- ``parent_dir(root, rel)``: the directory holding ``rel``, through real directories only; a symlink anywhere
  below the root, a ``..`` or an empty step ends the walk (fc-record deleting a synced source file);
- ``open_file(dfd, root, rel, flags)``: a file beneath the root, a symlink on the way followed only while its
  target stays beneath the root, the way fc-watch publishes in-root links (the sources of fc-transport and
  fc-process, sourcefile.py).  With openat2(2) (Linux >= 5.6) the kernel does this in one call
  (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); it refuses absolute links even when they point inside, so those,
  and kernels without openat2, go through ``_walk``: one openat(O_NOFOLLOW) per component from directory
  descriptors we hold, links read and resolved by us, never by the kernel;
- ``open_dir`` itself, for a caller that keeps the descriptors of the directories it walks and makes missing
  ones (file:// destinations, transporters/local.py);
- ``open_following(dfd, rel, flags)``: with ``--follow-symlinks``, a file whose way leads out of the root, reached
  only the way ``fc-watch --follow-symlinks`` publishes one (watchers/links.py has the rule).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from typing import Any

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_PATH: a handle for naming things relative to it, which needs no read permission on the directory.
PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
MAX_LINKS = 40  # symlinks followed in one resolution, as the kernel's limit


class OutsideRoot(ValueError):
    """``rel`` does not name a file beneath the root by plain directories (``..``, a symlink, not a directory)."""


class LeadsOut(OutsideRoot):
    """A symlink or a ``..`` on the way leads out of the root (``open_file``)."""


def rel_parts(rel: bytes) -> list[bytes]:
    """The names of ``rel``, a relative path under a root; OutsideRoot for an absolute path, an empty,
    ``.`` or ``..`` step, or a NUL byte (no file beneath a root is named so by fc-watch)."""
    parts = rel.split(b"/")
    # (an absolute or empty rel has an empty step too)
    # (find, not "in": bytes.__contains__ first tries its argument as an int, and builds and drops a TypeError)
    if rel.find(b"\0") >= 0 or not _BAD_STEPS.isdisjoint(parts):
        raise OutsideRoot("not a plain relative path (empty, absolute, or with an empty, '.' or '..' step)")
    return parts


_BAD_STEPS = frozenset((b"", b".", b".."))


def open_dir(name: bytes, parent: int | None = None, flags: int = DIR_FLAGS) -> int:
    """``name`` opened as a directory.  Relative to ``parent`` a symlink is never followed: OSError ENOTDIR or
    ELOOP for a link or a non-directory (``is_link`` tells them apart).  With no ``parent``, ``name`` is a root
    the user named, and a link there is followed.  FileNotFoundError when it is missing."""
    if parent is None:
        return os.open(name, flags)
    return os.open(name, flags | os.O_NOFOLLOW, dir_fd=parent)


def is_link(name: bytes, parent: int | None = None) -> bool:
    """Whether ``name`` (relative to ``parent``) is a symlink itself; OSError when it cannot be looked at."""
    return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)


@contextlib.contextmanager
def parent_dir(root: bytes, rel: bytes) -> Iterator[tuple[int, bytes]]:
    """(descriptor of the directory holding ``rel``, its last name), that directory reached from ``root``
    through real directories only.  The root itself may be a symlink (it is the user's setting); nothing
    below it is followed.  OutsideRoot when the walk meets a symlink or a non-directory; OSError as usual
    (FileNotFoundError: a directory on the way is gone)."""
    *dirs, name = rel_parts(rel)
    fd = open_dir(root)
    try:
        for part in dirs:
            try:
                nxt = open_dir(part, fd)
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


def open_file(dfd: int, root: bytes, rel: bytes, flags: int) -> int:
    """``rel`` opened with ``flags`` beneath ``dfd``, the open directory ``root``: a symlink on the way is followed
    only while its target stays beneath the root.  LeadsOut when the way leaves the root; OutsideRoot when it
    names no file (too many links, the root itself); FileNotFoundError or NotADirectoryError when it is gone (or a
    file is where a directory was); OSError for the rest."""
    if _openat2 is not None:
        try:
            return _openat2(dfd, rel, flags)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ELOOP, errno.ENOSYS, errno.EPERM):
                raise
            # EXDEV: a link leading out, or an absolute one (perhaps to inside): _walk decides.
    return _walk(dfd, root, rel, flags)


def open_following(dfd: int, rel: bytes, flags: int) -> int:
    """``rel`` opened with ``flags`` beneath ``dfd`` (an open root) as ``fc-watch --follow-symlinks`` publishes
    files (watchers/links.py): a symlinked directory on the way is entered wherever it leads (the trust that flag
    gives directory links), except where fc-watch refuses to go (into one of the directories on the way, to a
    directory that contains the root or a followed link's target, onto a pseudo-filesystem); a symlink to a file
    counts only when the file lies beneath the root or beneath the target of a symlinked directory on its way.
    Each directory is opened relative to the one above, and where a link led is read from the descriptor the
    kernel opened (/proc/self/fd), never from a path looked at again, so a link swapped in between changes nothing.
    LeadsOut for a file fc-watch would not publish; as ``open_file`` for the rest."""
    from .watchers.links import refused_dir, within  # only the --follow-symlinks runs that meet a link out

    bases = (_fd_path(dfd),)
    *dirs, last = rel_parts(rel)
    fd = os.dup(dfd)
    try:
        on_way = {_ident(fd)}
        for name in dirs:
            try:
                nxt = open_dir(name, fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not is_link(name, fd):
                    raise  # gone, or a file where a directory was (ENOTDIR): not the file of the event
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)  # the link, followed by the kernel: judged below
                try:
                    real = _fd_path(nxt)
                    why = "leads into a directory on its own way" if _ident(nxt) in on_way else refused_dir(real, bases)
                    if why is not None:
                        raise LeadsOut(f"{os.fsdecode(name)!r} is a symlink to {os.fsdecode(real)!r}, {why}")
                except BaseException:
                    os.close(nxt)
                    raise
                if not within(real, bases):
                    bases += (real,)
            os.close(fd)
            fd = nxt
            on_way.add(_ident(fd))
        try:
            return os.open(last, flags | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EMLINK):
                raise
        out = os.open(last, flags, dir_fd=fd)  # a link to a file: followed by the kernel, judged by where it led
        try:
            if not within(_fd_path(out), bases):
                raise LeadsOut("a symlink to a file outside the root and the targets of the links on its way")
        except BaseException:
            os.close(out)
            raise
        return out
    finally:
        os.close(fd)


def _fd_path(fd: int) -> bytes:
    """Where the open ``fd`` is: the kernel's own answer, whatever happened to the path since it was opened."""
    try:
        return os.readlink(b"/proc/self/fd/%d" % fd)
    except OSError:  # no /proc: nothing can be told, nothing is taken
        raise LeadsOut("where a symlink leads cannot be told without /proc") from None


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _walk(dfd: int, root: bytes, rel: bytes, read_flags: int) -> int:
    """openat2's RESOLVE_BENEATH by hand: components opened O_NOFOLLOW from descriptors we hold; a link is read
    and its target's components resolved in its place; ".." never climbs above the root."""
    real_roots = {root.rstrip(b"/"), os.path.realpath(root).rstrip(b"/")}
    stack = [os.dup(dfd)]
    todo = deque(rel.split(b"/"))
    links = 0
    try:
        while todo:
            name = todo.popleft()
            if name in (b"", b"."):
                continue
            if name == b"..":
                if len(stack) == 1:
                    raise LeadsOut("'..' above the root")
                os.close(stack.pop())
                continue
            last = not any(p not in (b"", b".") for p in todo)
            try:
                fd = os.open(name, read_flags | os.O_NOFOLLOW, dir_fd=stack[-1]) if last else open_dir(name, stack[-1])
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise  # FileNotFoundError among them: gone
                try:
                    target = os.readlink(name, dir_fd=stack[-1])
                except OSError:  # not a link: a file where a directory was, so not the file of the event
                    raise NotADirectoryError(errno.ENOTDIR, "a component is not a directory", name) from None
                links += 1
                if links > MAX_LINKS:
                    raise OutsideRoot("too many symlinks") from None
                if target.startswith(b"/"):
                    inside = [r for r in real_roots if target == r or target.startswith(r + b"/")]
                    if not inside:
                        raise LeadsOut("an absolute symlink out of the root") from None
                    target = target[len(inside[0]) :]
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extendleft(reversed(target.split(b"/")))
                continue
            if last:
                return fd
            stack.append(fd)
        raise OutsideRoot("it names the root itself")
    finally:
        for fd in stack:
            os.close(fd)


# -- openat2(2) through ctypes ----------------------------------------------------------------------------------

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (the syscall table was unified by then)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _make_openat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    # What every call passes but the directory and the name, made once: building the ctypes arguments cost more
    # than the system call.  One open_how per set of flags (a handful), only ever read by the kernel.
    number, size = ctypes.c_long(_SYS_OPENAT2), ctypes.c_size_t(ctypes.sizeof(_OpenHow))
    hows: dict[int, tuple[_OpenHow, Any]] = {}

    def openat2(dfd: int, rel: bytes, flags: int) -> int:
        how = hows.get(flags)
        if how is None:
            made = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
            how = hows[flags] = (made, ctypes.byref(made))  # (the struct kept alive with its reference)
        # (a Python int goes as a C int, what dfd is; bytes as a char pointer: to a NUL-terminated copy)
        fd = syscall(number, dfd, rel, how[1], size)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(fd)

    # Probe once: an old kernel says ENOSYS, a container's seccomp filter may say EPERM; both mean "walk".
    try:
        os.close(openat2(-100, b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))  # -100: AT_FDCWD
    except OSError:
        return None
    return openat2


_openat2 = _make_openat2() if os.uname().sysname == "Linux" else None
