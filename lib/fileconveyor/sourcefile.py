"""Opening the file an event describes, and only that file (fc-transport's uploads, fc-process's inputs).

An event names its file three times: ``root``, ``rel`` and ``path``.  Any of them may be forged (a third-party
stage writes what it likes) and the file may be swapped between fc-watch seeing it and us reading it.  So:

- ``path`` must be ``root`` + ``/`` + ``rel``, and ``rel`` may hold no empty, ``.`` or ``..`` component;
- the file is opened *beneath* ``root`` (``beneath.open_file``: openat2 RESOLVE_BENEATH, or a walk by hand): a
  symlink met on the way (a swapped-in one too) is followed only while its target stays beneath the root, the
  way fc-watch publishes in-root links; one leading out is refused;
- it must be a regular file (opened O_NONBLOCK: a FIFO put there cannot hang us), and when the event carries
  ``ino`` and ``size`` they must match the open file: otherwise it is another file now, or changed since the
  event (a newer event follows from fc-watch), and is not read.  (Events carry no device number; a file
  beneath the root on another device with the same inode number and size is not told apart.)

A ``SourceFile`` remembers its fstat from the open; ``check()`` says whether the file changed while it was read
(finding 5 of issue 16: a copy torn by a writer must not be reported as delivered).

``file`` (a processed file in fc-process's work directory) is named by one field only, so it cannot be checked
against ``root``; it is taken only beneath a directory called ``*.work`` inside one of the work bases the reader
was given (fc-process keeps its work files in ``<work base>/<state file name>.work/``), opened the same way
beneath that ``.work`` directory, which must be a real directory (not a symlink), ours, and not writable by
other users, as fc-process makes it (``work_dir_problem``).  See ``from_event``.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from . import beneath
from . import events as E
from .beneath import OutsideRoot, rel_parts
from .digests import blake2b
from .errors import Exit, FCError
from .plain import Frozen


class SourceRefused(FCError):
    """The event names a file that may not be read: outside its root, not a regular file, an inconsistent event."""

    exit = Exit.EVENTS_FAILED


class SourceOutside(SourceRefused):
    """The way to the file leaves its root (a symlink, or ".." above it)."""


class SourceGone(FCError):
    """The file vanished or is no longer the one the event describes (a newer event follows)."""

    exit = Exit.EVENTS_FAILED


class Source(Frozen):
    """Where a file is and what it should be: opened with ``open_source``.  Plain data, so it pickles (the
    isolated transporters' worker processes open it themselves)."""

    _fields = ("root", "rel", "ino", "size", "mtime_ns", "pipe_ok", "links_out_ok", "work")

    def __init__(
        self,
        root: bytes,  # a directory, trusted as given (it may itself be a symlink)
        rel: bytes,  # beneath root: no empty, "." or ".." components
        ino: int | None = None,  # None: not checked
        size: int | None = None,
        mtime_ns: int | None = None,
        pipe_ok: bool = False,  # a FIFO may be read (to its end): for plain paths only, an event's file is regular
        # fc-watch --follow-symlinks publishes files beneath symlinked directories that lead out of the root: such a
        # file is read through the links, but only when it is the very file of the event (ino and size known, equal)
        links_out_ok: bool = False,
        # root is an fc-process ``*.work`` folder named by an event's ``file``: opened only when it is a real
        # directory of ours that no other user can write (work_dir_problem), never through a symlink
        work: bool = False,
    ):
        d = self.__dict__
        d["root"], d["rel"], d["ino"], d["size"], d["mtime_ns"] = root, rel, ino, size, mtime_ns
        d["pipe_ok"], d["links_out_ok"], d["work"] = pipe_ok, links_out_ok, work

    # for the type checkers: set in __init__
    root: bytes
    rel: bytes
    ino: int | None
    size: int | None
    mtime_ns: int | None
    pipe_ok: bool
    links_out_ok: bool
    work: bool

    @property
    def path(self) -> bytes:
        return self.root.rstrip(b"/") + b"/" + self.rel if self.root.rstrip(b"/") else b"/" + self.rel

    @classmethod
    def plain(cls, path: bytes | str) -> Source:
        """A path the caller vouches for (the library API, tests): its directory is taken as it is, only its last
        component must not be a link leading out of that directory."""
        head, _, base = os.path.abspath(os.fsencode(path)).rpartition(b"/")
        return cls(head or b"/", base, pipe_ok=True)


def checked_rel(rel: bytes, what: str = "rel") -> bytes:
    try:
        rel_parts(rel)
    except OutsideRoot as exc:
        raise SourceRefused(f"refusing {what} {E.display(rel)!r}: {exc}") from None
    return rel


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():  # mtime_ns is a decimal string (docs/events.md)
        return int(value)
    return None


def _identity(ev: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """What tells the event's file from another: its inode and size.  (mtime_ns is not compared, since a file
    rewritten in place is still the file the event names, its modified event follows, and events replayed or kept
    in fixtures carry old times.)"""
    ino, size = ev.get("ino"), ev.get("size")
    # (the usual ints as they are: _int is for the rest)
    return ino if type(ino) is int else _int(ino), size if type(size) is int else _int(size)


def work_prefix(ev: Mapping[str, Any]) -> bytes:
    """The start of the name of the directory fc-process makes for an event's work file (``tempfile.mkdtemp`` adds
    8 random characters): "e", a hash of the event's ``path`` and ``rel``, "-".  from_event takes a ``file`` only
    from a directory so named for the event that names it: a forged line (which may copy any line it saw) cannot
    make a processed file publish under another path's or rel's name, as it cannot make a directory in the work
    folder.  (Which fc-process made it, and so which rule's processors ran, a line cannot be checked for.)"""
    path = E.get_path(ev, "path") if _has(ev, "path") else b""
    rel = E.get_path(ev, "rel") if _has(ev, "rel") else b""
    return b"e" + blake2b(b"%s\0%s" % (path, rel), digest_size=8).hexdigest().encode() + b"-"


# mkdtemp's random names' characters: an fc-process before the binding above called its work directories "e" and 8
_MKDTEMP_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789_"


def _works_for(rel: bytes, ev: Mapping[str, Any]) -> bool:
    """Whether a work file at ``rel`` beneath a ``*.work`` folder was made for ``ev`` (work_prefix).  A directory
    named by an fc-process of before the binding is taken too: such directories hold files of lines already
    written (in an outbox, replayed after an upgrade), and go once their reader acknowledges them."""
    top = rel.partition(b"/")[0]
    if top.startswith(work_prefix(ev)):
        return True
    return len(top) == 9 and top.startswith(b"e") and not top[1:].strip(_MKDTEMP_CHARS)


def _has(ev: Mapping[str, Any], field: str) -> bool:
    return field in ev or field + "_b64" in ev


def from_event(ev: Mapping[str, Any], work_bases: Iterable[bytes] = ()) -> Source:
    """The Source an event describes: its ``file`` when it has one (a processed file), else root/rel checked
    against ``path``.  SourceRefused for anything inconsistent or outside where it may be.

    ``file`` must lie in ``<base>/<name>.work/`` for one of ``work_bases``: there is no ``root`` to check it
    against, and accepting any path would let a forged event publish any file we can read.  That ``*.work``
    folder is checked when the file is opened (``work_dir_problem``)."""
    usual = usual_source(ev)
    if usual is not None:
        return usual[1]
    if _has(ev, "file"):
        file = os.path.normpath(E.get_path(ev, "file"))
        bases = {os.path.normpath(os.path.abspath(b)) for b in work_bases}
        for base in sorted(bases | {os.path.realpath(b) for b in bases}):
            base = base.rstrip(b"/") + b"/"
            if file.startswith(base):
                work, _, rel = file[len(base) :].partition(b"/")
                if work.endswith(b".work") and work != b".work" and rel:
                    if not _works_for(rel, ev):
                        raise SourceRefused(
                            f"refusing file {E.display(file)!r}: fc-process made it for another path (its work "
                            "directory is not named for this event's path and rel)"
                        )
                    return Source(base + work, checked_rel(rel, "file"), work=True)
        raise SourceRefused(
            f"refusing file {E.display(file)!r}: not in a work directory (a *.work folder in the state directory "
            "or in a --work-dir given to this stage)"
        )
    for field in ("root", "rel"):
        if not _has(ev, field):
            raise SourceRefused(f"the event has no {field!r}: cannot tell where its file lies")
    root, rel, path = E.get_path(ev, "root"), E.get_path(ev, "rel"), E.get_path(ev, "path")
    if not root.startswith(b"/"):
        raise SourceRefused(f"refusing root {E.display(root)!r}: not absolute")
    if root.find(b"\0") >= 0:  # (else the open below raises ValueError: an "internal error", not a refusal)
        raise SourceRefused(f"refusing root {E.display(root)!r}: it holds a NUL byte, no directory is named so")
    src = Source(_normpath(root), checked_rel(rel), *_identity(ev))
    head = src.root.rstrip(b"/")
    joined = head + b"/" + rel if head else b"/" + rel  # src.path (normal: root normalized, rel of plain steps)
    if path != joined and _normpath(path) != joined:
        raise SourceRefused(
            f"refusing {E.display(path)!r}: path is not root + rel ({E.display(root)!r} + {E.display(rel)!r})"
        )
    return src


def usual_source(ev: Mapping[str, Any]) -> tuple[bytes, Source] | None:
    """``from_event`` of the usual event in one pass, for a caller that takes many (fc-transport's main thread):
    ``root``, ``rel`` and ``path`` plain strings (no ``*_b64``, no ``file``), ``path`` exactly ``root`` + "/" +
    ``rel``, both absolute and normal, ``rel`` of plain steps.  (The event's path, the Source from_event gives);
    None for any other event, which from_event then checks, and refuses saying why, or takes."""
    root, rel, path = ev.get("root"), ev.get("rel"), ev.get("path")
    if type(root) is not str or type(rel) is not str or type(path) is not str:
        return None
    if "root_b64" in ev or "rel_b64" in ev or "path_b64" in ev or "file" in ev or "file_b64" in ev:
        return None
    # path is root + "/" + rel; then, with "/" after it, no empty, "." or ".." step in it says both that root is
    # normal (what _normpath gives back as it is) and that rel is plain (what checked_rel takes)
    end = path + "/"
    if (
        path != root + "/" + rel
        or not root.startswith("/")
        or "//" in end
        or "/./" in end
        or "/../" in end
        or "\0" in path
    ):
        return None
    try:
        raw_root, raw_rel = root.encode(), rel.encode()
    except UnicodeEncodeError:  # a lone surrogate: E.get_path refuses it
        return None
    return raw_root + b"/" + raw_rel, Source(raw_root, raw_rel, *_identity(ev))


def _normpath(path: bytes) -> bytes:
    """os.path.normpath of an absolute path, which is most often normal already: an empty, "." or ".." step
    shows as "//" or "/.", a trailing slash at the end; without them normpath would give ``path`` back."""
    # (find, not "in": bytes.__contains__ first tries its argument as an int, and builds and drops a TypeError)
    if path.find(b"//") >= 0 or path.find(b"/.") >= 0 or path.endswith(b"/"):
        return os.path.normpath(path)
    return path


class SourceFile(io.FileIO):
    """An open, checked source: unbuffered reads, ``fileno()`` for sendfile/splice, ``check()`` after reading."""

    path: bytes
    before: os.stat_result
    checked: bool  # check() found it unchanged after a whole read (``sent`` given): what was read is one version

    @property
    def known_size(self) -> int | None:
        """The size of a regular file when it was opened (a pipe: None, read to its end)."""
        return self.before.st_size if stat.S_ISREG(self.before.st_mode) else None

    def check(self, sent: int | None = None) -> None:
        """SourceGone when the file changed since it was opened (size, mtime, or ``sent`` bytes read that are
        not its size): what was read may mix two versions, so it must not be published."""
        now = os.fstat(self.fileno())
        b = self.before
        if not stat.S_ISREG(b.st_mode):  # a pipe (plain paths only): read to its end, nothing to compare
            return
        if (now.st_size, now.st_mtime_ns) != (b.st_size, b.st_mtime_ns) or (sent is not None and sent != b.st_size):
            got = f"; {sent} bytes read" if sent is not None else ""
            raise SourceGone(
                f"{E.display(self.path)} changed while it was read ({b.st_size} -> {now.st_size} bytes{got}); "
                "not sent, its newer version follows"
            )
        if sent is not None:
            self.checked = True


def work_dir_problem(st: os.stat_result) -> str | None:
    """Why a ``*.work`` folder (its fstat, opened without following a symlink) is not fc-process's, or None.

    fc-process creates its work folders 0700 (private.py): one of another owner, or that others may write to,
    was planted (``/tmp/evil.work`` next to a state file in /tmp) and may hold anything.  (One of ours that
    others cannot write is ours to use, whoever made it: only we could have put files there.)"""
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory (a symlink is never followed there)"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by us"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"other users may write to it (mode {stat.S_IMODE(st.st_mode):o}; fc-process makes it 0700)"
    return None


def _open_root(src: Source) -> int:
    try:
        # a work folder is never taken through a link; a root may be one (the user's setting, or fc-watch's)
        dfd = os.open(src.root, beneath.DIR_FLAGS | os.O_NOFOLLOW) if src.work else beneath.open_dir(src.root)
    except (FileNotFoundError, NotADirectoryError):
        # O_NOFOLLOW | O_DIRECTORY on a symlink fails with ENOTDIR (or ELOOP): tell it from a vanished folder
        if src.work and _is_link(src.root):
            raise SourceRefused(f"refusing file {E.display(src.path)!r}: its work folder is a symlink") from None
        raise SourceGone(f"{E.display(src.path)} vanished (its root {E.display(src.root)!r} is gone)") from None
    except OSError as exc:
        if src.work and exc.errno == errno.ELOOP:
            raise SourceRefused(f"refusing file {E.display(src.path)!r}: its work folder is a symlink") from None
        raise
    if src.work and (why := work_dir_problem(os.fstat(dfd))):
        os.close(dfd)
        raise SourceRefused(f"refusing file {E.display(src.path)!r}: its work folder is not fc-process's: {why}")
    return dfd


def _is_link(path: bytes) -> bool:
    try:
        return beneath.is_link(path)
    except OSError:
        return False


def open_source(src: Source, roots: Roots | None = None) -> SourceFile:
    """Open ``src`` for reading, beneath its root, and check it is the file it should be (see the module doc).
    SourceGone when it vanished or changed, SourceRefused when it may not be read, OSError for the rest.
    ``roots``: see Roots."""
    fd, st = _open_checked(src, roots)
    try:
        # Blocking reads from here on.  F_SETFL sets the status flags (O_NONBLOCK, O_APPEND, O_DIRECT...), of
        # which the file was opened with O_NONBLOCK alone (_READ): 0 clears just that, in one system call where
        # os.set_blocking makes two.
        fcntl.fcntl(fd, fcntl.F_SETFL, 0)
        f = SourceFile(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    f.path, f.before, f.checked = src.path, st, False
    return f


class SourceFd:
    """An open, checked source as a bare descriptor, for a caller that only hands it on (fc-transport's copier,
    transporters/local.py ``prepare``): no file object, whose making costs a system call more (io.FileIO's
    fstat), and its descriptor left as ``open_source_fd`` says."""

    __slots__ = ("before", "fd", "source")

    def __init__(self, fd: int, before: os.stat_result, source: Source):
        self.fd, self.before, self.source = fd, before, source

    @property
    def path(self) -> bytes:
        """The source's path (for messages: built when asked, not for every file)."""
        return self.source.path

    @property
    def known_size(self) -> int | None:
        """As SourceFile.known_size."""
        return self.before.st_size if stat.S_ISREG(self.before.st_mode) else None

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def open_source_fd(src: Source, roots: Roots | None = None) -> SourceFd:
    """``open_source``'s checks, for a descriptor copied from with sendfile(2) only.  It stays O_NONBLOCK as it was
    opened (open_source clears that, a system call): sendfile ignores it on the file it reads from
    (fs/read_write.c), as reads of a regular file do; a pipe (``pipe_ok``) is for open_source."""
    fd, st = _open_checked(src, roots)
    return SourceFd(fd, st, src)


def check_source(src: Source, roots: Roots | None = None) -> None:
    """Raise what ``open_source`` would, for a caller that reads nothing (fc-process's chains that only
    rename): the file is opened and checked the same way, then closed.  ``roots``: see Roots."""
    os.close(_open_checked(src, roots)[0])


class Roots:
    """Root directories held open for a batch of events by a caller that opens many files beneath the same roots
    (fc-process's rename-only chains, fc-transport's small local copies in its main thread): each root is opened
    once per batch instead of once per file.  Only the
    root's own resolution is shared (it is trusted as given, links and all: ``_open_root``); every file is still
    resolved beneath it on its own, by the same walk.  A ``*.work`` folder is never kept: it is checked per file.
    ``close`` at the end of the batch."""

    MAX = 64  # roots kept at once (events may name endless roots): all closed past it

    def __init__(self) -> None:
        self.fds: dict[bytes, int] = {}

    def open(self, src: Source) -> int:
        fd = self.fds.get(src.root)
        if fd is None:
            if len(self.fds) >= self.MAX:
                self.close()
            fd = self.fds[src.root] = _open_root(src)
        return fd

    def close(self) -> None:
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            os.close(fd)


def _open_checked(src: Source, roots: Roots | None = None) -> tuple[int, os.stat_result]:
    kept = roots is not None and not src.work  # (a work folder: opened and checked each time)
    dfd = roots.open(src) if kept and roots is not None else _open_root(src)
    try:
        fd = _open_beneath(dfd, src)
    except SourceOutside:
        if not (src.links_out_ok and src.ino is not None and src.size is not None):
            raise
        try:
            # the links followed as fc-watch --follow-symlinks judges them; _identify checks the file it gives
            fd = beneath.open_following(dfd, src.rel, _READ)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceGone(f"{E.display(src.path)} vanished before it could be read") from None
        except beneath.LeadsOut as exc:
            raise SourceOutside(
                f"refusing {E.display(src.path)!r}: it leads out of {E.display(src.root)!r}: {exc}"
            ) from None
        except beneath.OutsideRoot as exc:
            raise SourceRefused(f"refusing {E.display(src.path)!r}: {exc}") from None
    finally:
        if not kept:
            os.close(dfd)
    try:
        st = os.fstat(fd)
        _identify(src, st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _identify(src: Source, st: os.stat_result) -> None:
    if src.pipe_ok and stat.S_ISFIFO(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        raise SourceRefused(f"refusing {E.display(src.path)!r}: not a regular file")
    if (
        (src.ino is None or src.ino == st.st_ino)
        and (src.size is None or src.size == st.st_size)
        and (src.mtime_ns is None or src.mtime_ns == st.st_mtime_ns)
    ):
        return  # (the usual case, without the tuples the message below needs)
    seen = (src.ino, src.size, src.mtime_ns)
    now = (st.st_ino, st.st_size, st.st_mtime_ns)
    for want, got, what in zip(seen, now, ("inode", "size", "mtime_ns"), strict=True):
        if want is not None and want != got:
            raise SourceGone(f"{E.display(src.path)} is not the file the event describes ({what} {want} -> {got})")


def copy_fd(src: int, out: int, size: int | None = None) -> int:
    """Copy ``src`` to ``out`` from the start; the number of bytes copied.  ``size``: what the file held when it
    was opened (SourceFile.known_size): the copy stops there instead of asking once more to be told it ended (a
    system call per file, of about fifteen for a small one); a file that grew meanwhile is the caller's
    check to tell (SourceFile.check), as one that changed while it was read."""
    # sendfile copies inside the kernel, with no buffer to allocate and fill per file; a file system or
    # kernel that cannot do it gets a plain copy.
    try:
        offset = 0
        while size is None or offset < size:
            sent = os.sendfile(out, src, offset, 1 << 30)
            if not sent:
                break
            offset += sent
        return offset
    except OSError:
        if offset:  # sendfile gave up midway (rare): start again from the beginning
            os.lseek(src, 0, os.SEEK_SET)
            os.ftruncate(out, 0)
            os.lseek(out, 0, os.SEEK_SET)
        offset = 0
        while chunk := os.read(src, 1 << 16):
            offset += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        return offset


# -- resolution beneath a directory (beneath.py) --------------------------------------------------------------

_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def _open_beneath(dfd: int, src: Source) -> int:
    # O_NONBLOCK: a FIFO in an event's place cannot hang us (a caller's pipe is waited for, as open() does)
    flags = _READ & ~os.O_NONBLOCK if src.pipe_ok else _READ
    try:
        return beneath.open_file(dfd, src.root, src.rel, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise SourceGone(f"{E.display(src.path)} vanished before it could be read") from None
    except beneath.LeadsOut:
        raise _escape(src) from None
    except beneath.OutsideRoot as exc:  # too many links, the root itself
        raise SourceRefused(f"refusing {E.display(src.path)!r}: {exc}") from None


def _escape(src: Source) -> SourceOutside:
    return SourceOutside(f"refusing {E.display(src.path)!r}: it leads out of {E.display(src.root)!r} (a symlink?)")
