"""example (example://): copy this file to write a transporter; say here what it does.

Settings:
    bucket     what the setting means (every key of ``settings`` below is listed by ``fc-transport --list``)
Secrets (tokens, passwords) come from ``self.dest.secret("password")``: never from a setting.

    example://host/prefix  +  upload(b"/tmp/work/a.css", b"css/a.css")  ->  prefix/css/a.css on host

To make it usable: add ``"example": "yourpackage.module:Example"`` to the ``fileconveyor.transporters`` entry-point
group (or, for a built-in, to TRANSPORTERS in __init__.py), then add an ``example_backend`` fixture to
tests/transporters/conftest.py so the contract suite runs against a real server.

The base class has already checked every remote path (nothing can escape the root), opened the local file and
connected; any exception your code raises is turned into TransientError or PermanentError by ``classify``.

Optional: a ``skip_unchanged`` setting (fc-transport --skip-unchanged turns it on) with ``_upload`` returning
UNCHANGED when the destination surely holds the same bytes already; and, for a CDN in front of the files,
``invalidation_paths(rel)`` and ``invalidate(paths)`` (see cf.py), which fc-transport queues durably and batches.
"""

from __future__ import annotations

from typing import BinaryIO, ClassVar

from ..errors import FCError
from .base import UNCHANGED, RemoteStat, TransientError, Transporter, join, temp_path


class Example(Transporter):
    """One line saying what it does (the module docstring has the details)."""

    name = "example"
    schemes = ("example",)
    settings: ClassVar[dict[str, str]] = {
        "bucket": "what it means, in one line",
        "skip_unchanged": "yes: don't upload a file the destination already holds (optional; see the docstring)",
    }
    default_connections = 4

    def _connect(self) -> None:
        # Open the connection with self.timeout on every network operation; clean up if it fails half-way.
        self.conn: dict[bytes, bytes] = {}

    def _close(self) -> None:
        self.conn.clear()

    def _upload(self, src: BinaryIO, rel: bytes) -> str | None:
        final = join(self.dest.root, rel)
        if self.skip_unchanged:
            data = src.read()
            if self.conn.get(final) == data:
                return UNCHANGED  # nothing sent: the event says transported "unchanged"
            src.seek(0)
        tmp = temp_path(final)
        # Atomic: write the temporary name, then rename it over the final one (or use a protocol that
        # publishes an object only once it is complete, as S3's PUT does).  Create missing directories.
        try:
            self.conn[tmp] = src.read()
            self.conn[final] = self.conn.pop(tmp)
        except BaseException:
            self.conn.pop(tmp, None)
            raise
        return None

    def _delete(self, rel: bytes) -> None:
        self.conn.pop(join(self.dest.root, rel), None)  # already gone is success

    def _stat(self, rel: bytes) -> RemoteStat | None:
        data = self.conn.get(join(self.dest.root, rel))
        return None if data is None else RemoteStat(len(data))

    def classify(self, exc: BaseException) -> FCError:
        # Map the library's own exceptions first; the base class knows OSError, timeouts and resets.
        if isinstance(exc, KeyError):
            return TransientError(f"example: {exc}")
        return super().classify(exc)
