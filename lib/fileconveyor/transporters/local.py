"""symlink_or_copy (file://): deliver to a local folder, for an origin-pull CDN or a web server's document root.

Settings:
    symlink_within   colon-separated directories (the watched sources); a file from inside one of them, i.e.
                     one nothing processed, is symlinked instead of copied.  Processed files are always copied.

    file:///srv/cdn  +  upload(b"/tmp/work/site.css", b"css/site.css")  ->  /srv/cdn/css/site.css
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO, ClassVar, TypeVar

from .base import RemoteStat, Transporter, join, temp_path

T = TypeVar("T")


class SymlinkOrCopy(Transporter):
    """Copies files into a local folder (or symlinks unprocessed ones), atomically."""

    name = "symlink_or_copy"
    schemes = ("file",)
    settings: ClassVar[dict[str, str]] = {
        "symlink_within": "colon-separated source directories whose files are symlinked instead of copied",
    }
    default_connections = 4  # local disks gain little beyond a few parallel copies

    def _connect(self) -> None:
        self.root = self.dest.root or b"."
        within = self.dest.settings.get("symlink_within", "")
        self.symlink_within = [os.path.realpath(os.fsencode(d)) for d in within.split(":") if d]

    def _close(self) -> None:
        pass

    def _upload(self, src: BinaryIO, rel: bytes) -> None:
        final = join(self.root, rel)
        tmp = temp_path(final)
        try:
            source = os.path.realpath(os.fsencode(src.name)) if self.symlink_within else b""
            if source and self._symlinked(source):
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
