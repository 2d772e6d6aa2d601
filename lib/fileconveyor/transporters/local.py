"""symlink_or_copy (file://): deliver to a local folder, for an origin-pull CDN or a web server's document root.

Settings:
    symlink_within   colon-separated directories (the watched sources); a file from inside one of them, i.e.
                     one nothing processed, is symlinked instead of copied.  Processed files are always copied.
    skip_unchanged   yes: leave a file alone when the folder already holds the same bytes (sizes compared
                     first, then the contents; a symlink counts when it points at the same source)

    file:///srv/cdn  +  upload(b"/tmp/work/site.css", b"css/site.css")  ->  /srv/cdn/css/site.css
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO, ClassVar, NamedTuple

from .. import beneath
from ..sourcefile import Roots, Source, SourceFd, SourceFile, copy_fd, open_source_fd
from .base import (
    CLOSE_WAIT,
    UNCHANGED,
    F,
    PermanentError,
    R,
    RemoteStat,
    Transporter,
    join,
    safe_rel,
    temp_name,
    unchanged,
)
from .confine import DirCache, link_refused, not_a_directory, parent_and_name
from .destination import Destination


class SymlinkOrCopy(Transporter):
    """Copies files into a local folder (or symlinks unprocessed ones), atomically."""

    name = "symlink_or_copy"
    schemes = ("file",)
    settings: ClassVar[dict[str, str]] = {
        "symlink_within": "colon-separated source directories whose files are symlinked instead of copied",
        "skip_unchanged": "yes: don't rewrite a file the folder already holds with the same bytes",
    }
    default_connections = 4  # local disks gain little beyond a few parallel copies
    has_dirs = True
    takes_turns = True  # see Transporter.takes_turns: parallel copies of small files cost more than they gain

    def __init__(self, dest: Destination):
        super().__init__(dest)
        # Directory rel -> a descriptor of it, opened beneath the root without following links (confine.py).
        self.dirs: DirCache[int] = DirCache(os.close)
        self._busy = threading.RLock()  # held during an operation: see close()
        # Where this folder really is, and a source root -> where this folder lies in it (_inside): an upload
        # opens its source (_opened) before it connects.
        self.real_root = os.path.realpath(dest.root or b".")
        self.inside: dict[bytes, bytes | None] = {}

    def _run(self, what: str, rel: bytes, op: Callable[[], R]) -> R:
        with self._busy:
            return super()._run(what, rel, op)

    def close(self) -> None:
        # fc-transport, stopping, closes connections from its main thread.  The directory descriptors of an
        # operation in progress are not closed under it (their numbers could go to a directory opened meanwhile,
        # and its file there): after CLOSE_WAIT they are left to the operation, and to the end of the process.
        if self._busy.acquire(timeout=CLOSE_WAIT):
            try:
                super().close()
            finally:
                self._busy.release()

    def _connect(self) -> None:
        self.root = self.dest.root or b"."
        within = self.dest.settings.get("symlink_within", "")
        self.symlink_within = [os.path.realpath(os.fsencode(d)) for d in within.split(":") if d]

    def _close(self) -> None:
        self.dirs.clear()

    def _check_root(self) -> None:
        # The root, or the directory it will be made in, must be writable by us.  The first existing step must be
        # a directory: file:///etc/passwd/cdn was taken as "made in /etc", and every file then failed (ENOTDIR).
        d = os.path.abspath(self.root)
        while not os.path.lexists(d) and os.path.dirname(d) != d:
            d = os.path.dirname(d)
        if not os.path.isdir(d):
            raise NotADirectoryError(errno.ENOTDIR, f"{os.fsdecode(d)} is not a directory")
        if not os.access(d, os.W_OK | os.X_OK):
            if os.statvfs(d).f_flag & os.ST_RDONLY:  # (os.access says EACCES for that too: misleading)
                raise OSError(errno.EROFS, f"{os.fsdecode(d)} is on a read-only file system")
            raise PermissionError(errno.EACCES, f"{os.fsdecode(d)} is not writable")

    def _opened(self, source: Source | bytes | str, opener: Callable[[Source, Roots | None], F]) -> F:
        # Every upload opens its source here (upload() and prepare() both): a file that lies in this very folder
        # is refused before anything is opened or written.
        # (a processed copy's is its work folder: fc-transport asks refuse_own of the event's own path instead)
        if isinstance(source, Source) and not source.work:
            self.refuse_own(source.root, source.rel)
        return super()._opened(source, opener)

    def refuse_own(self, root: bytes, rel: bytes) -> None:
        """PermanentError when ``rel`` of the tree ``root`` lies in this destination folder: the folder is the source
        tree itself, or one inside it that fc-watch does not leave out.  Sent, such a file is a new file of the
        tree, whose event sends it again, a level deeper (cdn/cdn/cdn/...), for ever (through fc-process too, as a
        processed copy); with ``symlink_within``, a destination that is the source tree replaced each source file
        with a link to itself, and its content was lost."""
        where = self._inside(root)
        if where is None or not (where == b"" or rel == where or rel.startswith(where + b"/")):
            return
        tree = os.fsdecode(root)
        if where == b"":
            raise PermanentError(
                f"{self.dest}: the destination is the source tree {tree} itself: nothing to copy (and a link would "
                "replace the file); choose a folder outside it"
            )
        step = os.fsdecode(where)
        raise PermanentError(
            f"{self.dest}: {os.fsdecode(rel)!r} lies in the destination folder, which is inside the source "
            f"tree {tree}: it is a copy sent there, and sending it makes another ({step}/{step}/...) for ever; "
            f"leave the folder out (fc-watch --exclude '{step}/*') or choose one outside {tree}"
        )

    def _inside(self, root: bytes) -> bytes | None:
        """Where this destination folder lies in the source tree ``root`` (real paths): b"" for the tree itself,
        its relative path when beneath it, None when outside.  One realpath per source root, kept (a stream of
        forged roots empties the cache instead of filling memory)."""
        inside = self.inside
        if root in inside:
            return inside[root]
        real, mine = os.path.realpath(root), self.real_root
        prefix = real.rstrip(b"/") + b"/"  # b"/" for the tree /
        where = b"" if mine == real else mine[len(prefix) :] if mine.startswith(prefix) else None
        if len(inside) >= 256:
            inside.clear()
        inside[root] = where
        return where

    def _upload(self, src: BinaryIO, rel: bytes) -> str | None:
        head, _, name = rel.rpartition(b"/")
        # src.path: the checked source (sourcefile.py); a bare file object (the library used directly) has name
        source = os.path.realpath(getattr(src, "path", src.name)) if self.symlink_within else b""
        link = source if source and self._symlinked(source) else None
        parent = self._dir(head, create=True)
        assert parent is not None
        if self.skip_unchanged and _holds(parent, name, src, link):
            return UNCHANGED
        tmp = temp_name(join(self.root, rel))
        parent, fd = self._create(head, parent, tmp, link)
        try:
            if fd >= 0:
                try:
                    sent = copy_fd(src.fileno(), fd, src.known_size if isinstance(src, SourceFile) else None)
                finally:
                    os.close(fd)
                unchanged(src, sent)  # a copy torn by a writer never takes the final name
            # Both names relative to the directory checked above: a link put in its place since changes nothing.
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            _unlink_quietly(tmp, parent)
            raise
        return None

    def prepare(self, source: Source, remote_rel: bytes) -> Prepared | None:
        """What a copier process needs to upload ``source`` to ``remote_rel`` (transporters/copier.py), every check
        done here: the source opened beneath its root and checked (as upload()), the destination's directory
        opened beneath the root without following links (made where missing).  None when this upload is not a
        plain copy of a regular file (skip_unchanged, symlink_within: upload() does those).  Raises what upload()
        would for the same faults."""
        if not self.connected:
            self.connect()  # (symlink_within is read at connect)
        if self.skip_unchanged or self.symlink_within:
            return None
        rel = self.check_name(safe_rel(remote_rel))
        src = self._opened(source, open_source_fd)
        try:
            if src.known_size is None:  # a pipe (plain paths only): read to its end, here
                src.close()
                return None
            head, _, name = rel.rpartition(b"/")
            # A directory looked at within DIR_TTL is taken as _dir would take it, without its guard: no I/O.
            parent = self.dirs.get(head)
            if parent is None:
                parent = self._run("upload", rel, lambda: self._dir(head, create=True))
            assert parent is not None
            return Prepared(src, parent, temp_name(join(self.root, rel)), name)
        except BaseException:
            src.close()
            raise

    def _create(self, head: bytes, parent: int, tmp: bytes, link: bytes | None) -> tuple[int, int]:
        """Create the temporary file ``tmp`` in directory ``head`` (whose remembered descriptor is ``parent``): a
        symlink to ``link``, else a new file open for writing.  (The directory, the file's descriptor or -1.)  On
        the way, remove a temporary file left by a crash, and open the directory afresh when the remembered one
        has been removed since."""
        for attempt in range(4):
            try:
                if link is not None:
                    os.symlink(link, tmp, dir_fd=parent)
                    return parent, -1
                # The default mode (0666 minus umask), unlike mkstemp's 0600: web servers must read the file.
                # O_EXCL: never write through whatever is there, a link included.
                return parent, os.open(tmp, _CREATE, 0o666, dir_fd=parent)
            except FileNotFoundError:
                if attempt >= 2:
                    raise
                self.dirs.clear()
                parent = self._dir(head, create=True)  # type: ignore[assignment] # never None when creating
            except FileExistsError:
                if attempt == 3:
                    raise
                _unlink_quietly(tmp, parent)
        raise AssertionError("unreachable")

    def _delete(self, rel: bytes) -> None:
        head, name = parent_and_name(rel)
        for fresh in (False, True):
            if fresh:
                self.dirs.clear()  # what was remembered may have been removed: look again before saying "gone"
            parent = self._dir(head, create=False)
            if parent is None:
                continue
            try:
                os.unlink(name, dir_fd=parent)  # the name itself, were it a link: never what it points to
                return
            except FileNotFoundError:
                continue

    def _rmdir(self, rel: bytes) -> bool:
        head, name = parent_and_name(rel)
        self.dirs.clear()  # the directory's own descriptor goes too: one held open is no reason to keep it
        try:
            parent = self._dir(head, create=False)
        except PermanentError:  # a link on the way: nothing beneath it is ours to remove (as ftp and sftp)
            return False
        if parent is None:
            return True
        try:
            os.rmdir(name, dir_fd=parent)  # a link there is no directory: refused (ENOTDIR), left alone
        except FileNotFoundError:
            return True
        except OSError:  # not empty (a file arrived meanwhile, or someone else's), or not a directory
            return False
        return True

    def _stat(self, rel: bytes) -> RemoteStat | None:
        head, name = parent_and_name(rel)
        for fresh in (False, True):
            if fresh:
                self.dirs.clear()
            parent = self._dir(head, create=False)
            if parent is None:
                continue
            try:
                st = os.stat(name, dir_fd=parent)  # a file symlinked by symlink_within: the size of its source
            except (FileNotFoundError, NotADirectoryError):
                continue
            return RemoteStat(st.st_size, st.st_mtime)
        return None

    def links_to(self, remote_rel: bytes | str, source: bytes) -> bool:
        """Whether ``remote_rel`` is symlink_within's link to ``source`` (its real path, as upload() makes it):
        with the source gone, stat() finds nothing there (the link dangles), yet that link is File Conveyor's."""
        rel = self.check_name(safe_rel(remote_rel))
        head, name = parent_and_name(rel)

        def look() -> bool:
            if not self.symlink_within:  # (read at connect)
                return False
            parent = self._dir(head, create=False)
            try:
                return parent is not None and os.readlink(name, dir_fd=parent) == source
            except OSError:  # not there, not a link
                return False

        return bool(self._run("stat", rel, look))

    def _dir(self, rel: bytes, create: bool) -> int | None:
        """A descriptor of directory ``rel`` below the root (b"": the root), each component opened relative
        to the one above without following links; None when it does not exist (or a file is in the way) and
        ``create`` is false.  A link where a directory is expected: PermanentError."""
        fd = self.dirs.get(rel)
        if fd is not None:
            return fd
        # Up to the deepest directory remembered (or the root), then down one component at a time: a loop, since
        # a recursion ended a file a thousand directories deep with "maximum recursion depth exceeded".
        below: list[bytes] = []
        while rel:
            below.append(rel)
            rel = parent_and_name(rel)[0]
            fd = self.dirs.get(rel) if rel else None
            if fd is not None:
                break
        else:
            fd = self.dirs.get(b"")
            if fd is None:
                fd = _open_dir(self.root, None)
                if fd is None and create:
                    os.makedirs(self.root, exist_ok=True)  # the root, and above it, as the user named it
                    fd = _open_dir(self.root, None)
                if fd is None:
                    return None
                self.dirs.put(b"", fd)
        for sub in reversed(below):
            fd = self._subdir(fd, sub, parent_and_name(sub)[1], create)
            if fd is None:
                return None
            self.dirs.put(sub, fd)
        return fd

    def _subdir(self, parent: int, rel: bytes, name: bytes, create: bool) -> int | None:
        try:
            fd = _open_dir(name, parent)
            if fd is None and create:
                try:
                    os.mkdir(name, 0o777, dir_fd=parent)
                    self.made_dirs.append(rel)
                except FileExistsError:
                    pass  # another connection made it (or something else is there: the open below says)
                fd = _open_dir(name, parent)
            return fd
        except NotADirectoryError:
            if beneath.is_link(name, parent):
                raise link_refused(join(self.root, rel)) from None
            if create:
                raise not_a_directory(join(self.root, rel)) from None
            return None  # a file where a directory would be: nothing beneath it

    def _symlinked(self, source: bytes) -> bool:
        return any(source.startswith(d.rstrip(b"/") + b"/") for d in self.symlink_within)


class Prepared(NamedTuple):
    """An upload checked and ready for a copier (SymlinkOrCopy.prepare): the open source, the destination's
    directory (a descriptor the transporter keeps: the copier is given a duplicate), the temporary name and the
    final one in that directory."""

    src: SourceFd
    dir_fd: int
    tmp: bytes
    name: bytes


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _open_dir(name: bytes, parent: int | None) -> int | None:
    """``name`` opened as a directory (relative to ``parent``: without following a link), None if missing.
    An O_PATH handle: it names things relative to it, and needs no read permission on the directory."""
    try:
        return beneath.open_dir(name, parent, beneath.PATH_FLAGS)
    except FileNotFoundError:
        return None


def _holds(parent: int, name: bytes, src: BinaryIO, link_to: bytes | None) -> bool:
    """Whether ``name`` in ``parent`` already is what an upload of ``src`` would make: a symlink to ``link_to``,
    or a regular file with the same bytes.  Reading both costs about what the copy would, but leaves the file,
    its mtime and whatever caches it alone."""
    try:
        if link_to is not None:
            return os.readlink(name, dir_fd=parent) == link_to
        # Looked at before it is opened: opening a FIFO or a device someone put there could block, or do things.
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size != os.fstat(src.fileno()).st_size:
            return False
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        with open(fd, "rb", buffering=0) as there:
            if os.fstat(fd).st_ino != st.st_ino:  # swapped since
                return False
            while True:
                mine, theirs = src.read(1 << 20), there.read(1 << 20)
                if mine != theirs:
                    return False
                if not mine:
                    return True
    except OSError:  # not there, not a link, unreadable: upload it
        return False
    finally:
        src.seek(0)


def _unlink_quietly(name: bytes, parent: int) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass
