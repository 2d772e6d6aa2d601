"""symlink_or_copy (file://): deliver to a local folder, for an origin-pull CDN or a web server's document root.

Settings:
    symlink_within   colon-separated directories (the watched sources); a file from inside one of them, i.e.
                     one nothing processed, is symlinked instead of copied.  Processed files are always copied.

    file:///srv/cdn  +  upload(b"/tmp/work/site.css", b"css/site.css")  ->  /srv/cdn/css/site.css
"""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO, ClassVar

from .base import RemoteStat, Transporter, join, temp_path


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
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = temp_path(final)
        try:
            source = os.path.realpath(os.fsencode(src.name))
            if self._symlinked(source):
                os.symlink(source, tmp)
            else:
                # Open with the default mode (0666 minus umask), unlike mkstemp's 0600: web servers must read it.
                with open(tmp, "xb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise

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


def _unlink_quietly(path: bytes) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
