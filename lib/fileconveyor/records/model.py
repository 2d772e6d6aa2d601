"""What the synced-files record holds, whichever database keeps it (sqlite.py, postgres.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..plain import Value

Version = tuple[int | None, int | None, int | None]  # size, mtime_ns, ino

# The columns Reader.rows gives after the seed's four (input_file, transported_file_basename, url, server): the
# rest of Synced's fields, so that a row read is the row written.
EXTRA_COLUMNS = (
    "remote", "size", "mtime_ns", "ino", "remote_size", "hash", "processed", "source", "root", "rel", "event_id",
)  # fmt: skip


def db_key(path: bytes) -> str | bytes:
    """``input_file`` as stored: UTF-8 text, or the raw bytes for a name that is not UTF-8."""
    try:
        return path.decode("utf-8")
    except UnicodeDecodeError:
        return path


def key_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def remote_name(remote: str | bytes | None, rel: str | bytes | None, basename: str | bytes | None) -> bytes | None:
    """Where a row's file went under its destination: the ``remote`` column, or (in rows without one: the old
    daemon's, imported) its rel's directory and the transported base name; None when neither is known.
    ValueError for a value that is not text (a SQLite column takes any type) or a base name that is not one
    ('/', '.', '..'): the record holds what a line said, and a reader must not end on it nor be led elsewhere."""
    for value in (remote, rel, basename):
        if value is not None and not isinstance(value, (str, bytes)):
            raise ValueError(f"a recorded name is not text: {value!r}")
    if remote:
        return key_bytes(remote)
    if rel is None or not basename:
        return None
    name = key_bytes(basename)
    if name.find(b"/") >= 0 or name in (b".", b".."):
        raise ValueError(f"the recorded base name {name!r} is not a base name")
    head = key_bytes(rel).rpartition(b"/")[0]
    return head + b"/" + name if head else name


class Synced(Value):
    """One synced_files row: what fc-record writes (``upsert``), the old daemon's import adds (``import_row``) and
    fc-verify reads (``Reader.rows``, through ``read``)."""

    __slots__ = ("input_file", "basename", "url", "server", *EXTRA_COLUMNS)
    _fields = __slots__

    def __init__(
        self,
        input_file: str | bytes,
        basename: str | bytes,
        url: str,
        server: str,
        remote: str | bytes | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        ino: int | None = None,
        remote_size: int | None = None,
        hash: str | None = None,
        processed: str | None = None,
        source: str | None = None,
        root: str | bytes | None = None,
        rel: str | bytes | None = None,
        event_id: str | None = None,
    ):
        self.input_file = input_file
        self.basename = basename
        self.url = url
        self.server = server
        self.remote = remote
        self.size = size
        self.mtime_ns = mtime_ns
        self.ino = ino
        self.remote_size = remote_size
        self.hash = hash
        self.processed = processed
        self.source = source
        self.root = root
        self.rel = rel
        self.event_id = event_id

    @classmethod
    def read(cls, values: Sequence[Any]) -> Synced:
        """A row as ``Reader.rows`` gives it: the seed's four columns, then EXTRA_COLUMNS."""
        return cls(*values[:4], **dict(zip(EXTRA_COLUMNS, values[4:], strict=True)))

    def values(self, synced_at: float) -> tuple:
        """The row's columns as the writers take them: these fields in their order, then ``synced_at``
        (fc-record builds the same tuple straight from an event: stages/record/rows.py, synced_values)."""
        return (
            self.input_file, self.basename, self.url, self.server, self.remote, self.size, self.mtime_ns, self.ino,
            self.remote_size, self.hash, self.processed, self.source, self.root, self.rel, self.event_id, synced_at,
        )  # fmt: skip

    @property
    def path(self) -> bytes:
        return key_bytes(self.input_file)

    @property
    def unprocessed(self) -> bool:
        """Whether the remote file is the source's bytes (so sizes and hashes compare with the source)."""
        return self.processed is None and self.remote_size is not None and self.remote_size == self.size


class Deletion(Value):
    """A source_deletions row."""

    __slots__ = (  # noqa: RUF023 (column order)
        "input_file",
        "servers",
        "version",
        "source",
        "root",
        "rel",
        "scheduled_at",
        "due_at",
        "deleted_at",
        "event_id",
        "owner",
    )
    _fields = __slots__

    def __init__(
        self,
        input_file: str | bytes,
        servers: list[str],
        version: Version,
        source: str | None,
        root: str | bytes | None,
        rel: str | bytes | None,
        scheduled_at: float,
        due_at: float,
        deleted_at: float | None,
        event_id: str | None,
        owner: str | None,
    ):
        self.input_file = input_file
        self.servers = servers
        self.version = version
        self.source = source
        self.root = root
        self.rel = rel
        self.scheduled_at = scheduled_at
        self.due_at = due_at
        self.deleted_at = deleted_at
        self.event_id = event_id
        self.owner = owner


def deleted_by_record(mark: tuple[float | None, str | None] | None, event: Mapping[str, Any]) -> bool:
    """Whether a ``deleted`` event reports a deletion fc-record made after sync (fc-transport's --record-db check),
    given ``mark``, the (deleted_at, event_id) of the path's source_deletions row (None: no row).

    True when ``deleted_at`` is set and either the event's ``id`` equals the row's ``event_id`` (the id fc-watch
    gives the deletion of exactly the version fc-record deleted) or, for an event without an id, no file is at
    that path now.  A file the user recreated and deleted again has another id, so its deletion is propagated.
    """
    from .. import events as E

    if mark is None or mark[0] is None:
        return False
    eid = event.get("id")
    if isinstance(eid, str) and mark[1]:
        return eid == mark[1]
    return not os.path.lexists(E.get_path(dict(event), "path"))
