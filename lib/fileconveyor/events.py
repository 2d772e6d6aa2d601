"""The File Conveyor event protocol: the only code that knows how events are encoded.

An event is one JSON object on one line (NDJSON), UTF-8, ending in "\\n".
docs/events.md is the public description; this module is its implementation.

Paths are bytes inside File Conveyor (a Linux file name is any bytes but "/" and
NUL).  On the wire a path field ``X`` is a JSON string; when the bytes are not
valid UTF-8 the string is a lossy display form and ``X_b64`` carries the exact
bytes in base64.  So a reader takes ``X_b64`` when it is there, else ``X``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_str  # the C encoder when available
from typing import IO, Any, NamedTuple

VERSION = 1
KINDS = ("created", "modified", "deleted")

# Path-valued fields this module knows how to encode/decode.  Stages that add
# their own path fields register them here so the *_b64 rule applies to them too.
PATH_FIELDS = ("root", "path", "rel")

Event = dict[str, Any]


class EventError(ValueError):
    """A line that is not a valid event (bad JSON, wrong version, missing field)."""


# -- paths ---------------------------------------------------------------------------


def put_path(event: Event, field: str, raw: bytes) -> None:
    """Store the bytes path ``raw`` in ``event[field]`` (and ``field_b64`` if needed)."""
    try:
        event[field] = raw.decode("utf-8")
        event.pop(field + "_b64", None)
    except UnicodeDecodeError:
        event[field] = raw.decode("utf-8", "replace")
        event[field + "_b64"] = base64.b64encode(raw).decode("ascii")


def get_path(event: Event, field: str) -> bytes:
    """The exact bytes of path field ``field`` of ``event``."""
    b64 = event.get(field + "_b64")
    if b64 is not None:
        try:
            return base64.b64decode(b64, validate=True)
        except (ValueError, TypeError):  # binascii.Error is a ValueError
            raise EventError(f"field {field}_b64 is not valid base64") from None
    value = event.get(field)
    if not isinstance(value, str):
        raise EventError(f"field {field!r} is missing or not a string")
    # surrogatepass would let lone surrogates through; a JSON string holding one is
    # not a file name we ever wrote, so refuse it instead of inventing bytes.
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EventError(f"field {field!r} is not valid Unicode: {exc}") from None


def display(raw: bytes) -> str:
    """A printable form of a bytes path for messages meant for people."""
    text = raw.decode("utf-8", "backslashreplace")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


# -- ids -----------------------------------------------------------------------------


def event_id(source: str, rel: bytes, kind: str, size: int, mtime_ns: int, ino: int) -> str:
    """A stable id for one observed change of one file.

    It depends only on what was observed (source, path, kind, size, mtime, inode),
    so the same change seen again after a crash or a rescan gets the same id and a
    downstream stage can recognise the replay by comparing with the last id it
    applied for that path.
    """
    data = b"%s\0%s\0%s\0%d\0%d\0%d" % (
        source.encode("utf-8", "surrogateescape"),
        rel,
        kind.encode(),
        size,
        mtime_ns,
        ino,
    )
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# -- building ------------------------------------------------------------------------


class FileStat(NamedTuple):
    """What a change is judged by: a file is modified when any of these differ."""

    size: int
    mtime_ns: int
    ino: int


def file_event(
    kind: str,
    source: str,
    root: bytes,
    rel: bytes,
    st: FileStat,
    via: str,
) -> Event:
    """A created/modified/deleted event as fc-watch emits it.

    For ``deleted`` events ``st`` is the last state known before the file went away;
    it feeds the id but size and mtime are not reported (the file has none now).
    """
    ev: Event = {"v": VERSION, "id": event_id(source, rel, kind, st.size, st.mtime_ns, st.ino)}
    ev["kind"] = kind
    ev["source"] = source
    put_path(ev, "root", root)
    put_path(ev, "path", join(root, rel))
    put_path(ev, "rel", rel)
    if kind != "deleted":
        ev["size"] = st.size
        ev["mtime"] = mtime_seconds(st.mtime_ns)
        # A string: JSON numbers past 2**53 are rounded by jq 1.6 and JavaScript.
        ev["mtime_ns"] = str(st.mtime_ns)
        ev["ino"] = st.ino
    ev["via"] = via
    return ev


def mtime_seconds(mtime_ns: int) -> float:
    """Seconds since the epoch, truncated to the microsecond (what ``mtime`` shows)."""
    return (mtime_ns // 1000) / 1e6


def encode_file_event(kind: str, source: str, root: bytes, rel: bytes, st: FileStat, via: str) -> bytes:
    """``encode(file_event(...))`` built directly: fc-watch's hot path on large scans.

    Same event, same meaning; only names that are not UTF-8 (and pre-1970 mtimes)
    take the general path.  tests/unit/test_events.py checks the two agree.
    """
    try:
        rel_s = rel.decode("utf-8")
        root_s = root.decode("utf-8")
    except UnicodeDecodeError:
        return encode(file_event(kind, source, root, rel, st, via))
    if st.mtime_ns < 0:
        return encode(file_event(kind, source, root, rel, st, via))
    path_s = (root_s.rstrip("/") if root_s != "/" else "") + "/" + rel_s
    eid = event_id(source, rel, kind, st.size, st.mtime_ns, st.ino)
    line = (
        f'{{"v":{VERSION},"id":"{eid}","kind":"{kind}","source":{_json_str(source)},'
        f'"root":{_json_str(root_s)},"path":{_json_str(path_s)},"rel":{_json_str(rel_s)}'
    )
    if kind != "deleted":
        us = st.mtime_ns // 1000
        line += (
            f',"size":{st.size},"mtime":{us // 1000000}.{us % 1000000:06d},"mtime_ns":"{st.mtime_ns}","ino":{st.ino}'
        )
    return (line + f',"via":"{via}"}}\n').encode("utf-8")


def join(root: bytes, rel: bytes) -> bytes:
    return root.rstrip(b"/") + b"/" + rel if root != b"/" else b"/" + rel


# -- writing -------------------------------------------------------------------------


def encode(event: Event) -> bytes:
    """One event as one line of bytes, newline included."""
    # ensure_ascii=False keeps names readable; lone surrogates cannot occur because
    # undecodable names travel as *_b64 (put_path), so the UTF-8 encode is safe.
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class EventWriter:
    """Writes events to a binary stream, one whole line each.

    Normally every line is flushed at once.  During a bulk scan ``batch(True)``
    lets lines collect into blocks of up to 64 KiB (always whole lines), written
    when the block is full or flush() is called: a scan of a million files
    otherwise spends much of its time in write(2).  Callers flush before they
    commit state that depends on the lines having been written.

    Raises BrokenPipeError when the reader has gone; the CLI layer turns that into
    a quiet exit.
    """

    BLOCK = 65536

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.count = 0
        self._batching = False
        self._buf: list[bytes] = []
        self._size = 0

    def write(self, event: Event) -> None:
        self.write_line(encode(event))

    def write_line(self, line: bytes) -> None:
        """Write one already-encoded event line (from encode() or encode_file_event())."""
        self.count += 1
        if self._batching:
            self._buf.append(line)
            self._size += len(line)
            if self._size >= self.BLOCK:
                self.flush()
            return
        self.stream.write(line)
        self.stream.flush()

    def batch(self, on: bool) -> None:
        if not on:
            self.flush()
        self._batching = on

    def flush(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            self._size = 0
            self.stream.write(data)
        self.stream.flush()


# -- reading -------------------------------------------------------------------------


@dataclass(slots=True)
class BadLine:
    """A line that could not be taken as an event: reported, never fatal."""

    lineno: int
    reason: str
    text: bytes


def decode(line: bytes) -> Event:
    """Parse and validate one line (without or with its newline)."""
    try:
        ev = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    if not isinstance(ev, dict):
        raise EventError("not a JSON object")
    v = ev.get("v")
    if v != VERSION:
        raise EventError(f"unsupported event version {v!r} (this program reads v{VERSION})")
    if ev.get("kind") not in KINDS:
        raise EventError(f"unknown kind {ev.get('kind')!r} (expected one of {', '.join(KINDS)})")
    for field in ("path",):
        get_path(ev, field)  # raises EventError when missing or malformed
    return ev


def events_from(lines: Iterable[bytes], on_bad: Callable[[BadLine], None]) -> Iterator[Event]:
    """Events from lines (each with its newline); a bad line goes to ``on_bad`` with
    its line number and the stream goes on.

    A last line without its newline is a torn write (the writer died mid-line): it is
    never taken as an event, even when it happens to parse.
    """
    for lineno, line in enumerate(lines, 1):
        if not line.endswith(b"\n"):
            on_bad(BadLine(lineno, "incomplete last line (no newline): the writer died mid-line?", line))
            continue
        if not line.strip():
            continue
        try:
            yield decode(line)
        except EventError as exc:
            on_bad(BadLine(lineno, str(exc), line))
