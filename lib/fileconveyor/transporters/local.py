"""symlink_or_copy (file://): deliver to a local folder, for an origin-pull CDN or a web server's document root.

Settings:
    symlink_within   colon-separated directories (the watched sources); a file from inside one of them, i.e.
                     one nothing processed, is symlinked instead of copied.  Processed files are always copied.
    skip_unchanged   yes: leave a file alone when the folder already holds the same bytes (sizes compared
                     first, then the contents; a symlink counts when it points at the same source)

    file:///srv/cdn  +  upload(b"/tmp/work/site.css", b"css/site.css")  ->  /srv/cdn/css/site.css
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import BinaryIO, ClassVar, TypeVar

from .base import UNCHANGED, RemoteStat, Transporter, join, temp_path
from .destination import Destination

T = TypeVar("T")


class SymlinkOrCopy(Transporter):
    """Copies files into a local folder (or symlinks unprocessed ones), atomically."""

    name = "symlink_or_copy"
    schemes = ("file",)
    settings: ClassVar[dict[str, str]] = {
        "symlink_within": "colon-separated source directories whose files are symlinked instead of copied",
        "skip_unchanged": "yes: don't rewrite a file the folder already holds with the same bytes",
    }
    default_connections = 4  # local disks gain little beyond a few parallel copies

    def __init__(self, dest: Destination):
        super().__init__(dest)
        self.skip_unchanged = dest.flag("skip_unchanged")

    def _connect(self) -> None:
        self.root = self.dest.root or b"."
        within = self.dest.settings.get("symlink_within", "")
        self.symlink_within = [os.path.realpath(os.fsencode(d)) for d in within.split(":") if d]

    def _close(self) -> None:
        pass

    def _upload(self, src: BinaryIO, rel: bytes) -> str | None:
        final = join(self.root, rel)
        source = os.path.realpath(os.fsencode(src.name)) if self.symlink_within else b""
        link = bool(source) and self._symlinked(source)
        if self.skip_unchanged and _holds(final, src, source if link else None):
            return UNCHANGED
        tmp = temp_path(final)
        try:
            if link:
                self._retrying(final, tmp, lambda: os.symlink(source, tmp))
            else:
                # The default mode (0666 minus umask), unlike mkstemp's 0600: web servers must read the file.
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                fd = self._retrying(final, tmp, lambda: os.open(tmp, flags, 0o666))
                try:
                    _copy(src.fileno(), fd)
                finally:
                    os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return None

    def _retrying(self, final: bytes, tmp: bytes, create: Callable[[], T]) -> T:
        """``create()`` the temporary file; on the way, make missing directories and remove a temporary file
        left by a crash (O_EXCL: never write through whatever is there).  Trying first costs nothing when the
        directory exists, which for many small files saves a mkdir and a stat each."""
        for _ in range(3):
            try:
                return create()
            except FileNotFoundError:
                os.makedirs(os.path.dirname(final), exist_ok=True)
            except FileExistsError:
                _unlink_quietly(tmp)
        return create()

    def _delete(self, rel: bytes) -> None:
        try:
            os.unlink(join(self.root, rel))
        except (FileNotFoundError, NotADirectoryError):  # a file where a parent directory was: still gone
            pass

    def _stat(self, rel: bytes) -> RemoteStat | None:
        try:
            st = os.stat(join(self.root, rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return RemoteStat(st.st_size, st.st_mtime)

    def _symlinked(self, source: bytes) -> bool:
        return any(source.startswith(d.rstrip(b"/") + b"/") for d in self.symlink_within)


def _holds(final: bytes, src: BinaryIO, link_to: bytes | None) -> bool:
    """Whether ``final`` already is what an upload of ``src`` would make: a symlink to ``link_to``, or a regular
    file with the same bytes.  Reading both costs about what the copy would, but leaves the file, its mtime and
    whatever caches it alone."""
    try:
        if link_to is not None:
            return os.readlink(final) == link_to
        st = os.lstat(final)
        if not stat.S_ISREG(st.st_mode) or st.st_size != os.fstat(src.fileno()).st_size:
            return False
        with open(final, "rb", buffering=0) as there:
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


def _copy(src: int, out: int) -> None:
    # sendfile copies inside the kernel, with no buffer to allocate and fill per file; a file system or
    # kernel that cannot do it gets a plain copy.
    try:
        offset = 0
        while sent := os.sendfile(out, src, offset, 1 << 30):
            offset += sent
    except OSError:
        if offset:  # sendfile gave up midway (rare): start again from the beginning
            os.lseek(src, 0, os.SEEK_SET)
            os.ftruncate(out, 0)
            os.lseek(out, 0, os.SEEK_SET)
        while chunk := os.read(src, 1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]


def _unlink_quietly(path: bytes) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
