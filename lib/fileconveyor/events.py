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
import json
import re
from collections.abc import Callable, Iterable, Iterator
from json.encoder import c_make_encoder  # type: ignore[attr-defined]  # None without the C accelerator
from json.encoder import encode_basestring as _json_str  # the C encoder when available
from typing import Any, NamedTuple

from .digests import blake2b
from .plain import Value

VERSION = 1
KINDS = ("created", "modified", "deleted")
# Not a file event: a pass-through filter (fc-filter) says that the lines of hop.from up to hop.seq that it did not
# pass on were dropped, so its reader moves its mark there and acknowledges them (docs/events.md, "dropped")
DROPPED = "dropped"
# Not a file event either: a pass-through (fc-tee, fc-filter) writes it first into a named FIFO when it starts.  Its
# reader may never have seen the end of the previous pass-through's lines (it had lines left to read when the new
# one opened the FIFO), so it could not know that lines were lost between: those the dead one had read, and those
# fc-tee skipped while no one read its output.  A File Conveyor reader asks its writers again for what it has not
# acknowledged, as after a restart (docs/durability.md, "A pass-through replaced unseen"; docs/events.md).
RESEND = "resend"
RESEND_LINE = b'{"v":%d,"kind":"%s"}\n' % (VERSION, RESEND.encode())

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
    return blake2b(data, digest_size=16).hexdigest()


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


class FileEventEncoder:
    """``encode(file_event(...))`` for one source, built directly: fc-watch's hot path.

    Everything that is the same for every event of a source (its name, root, the
    JSON of the root) is prepared once.  Same event, same meaning as the general
    path, which names that are not UTF-8 (and pre-1970 mtimes) still take;
    tests/unit/test_events.py checks that the two agree.
    """

    def __init__(self, source: str, root: bytes, via: str):
        self.source, self.root, self.via = source, root, via
        self._source_b = source.encode("utf-8", "surrogateescape")
        try:
            root_s = root.decode("utf-8")
        except UnicodeDecodeError:
            self._heads: dict[str, str] | None = None
            return
        base = root_s.rstrip("/") if root_s != "/" else ""
        # JSON escapes character by character, so the escaped root prefix and the
        # escaped relative path can be joined: path = prefix + rel.
        path_prefix = _json_str(base + "/")[:-1]
        common = f'"source":{_json_str(source)},"root":{_json_str(root_s)},"path":{path_prefix}'
        self._heads = {k: f'","kind":"{k}",{common}' for k in KINDS}
        self._tail = f',"via":"{via}"}}\n'
        self._open = f'{{"v":{VERSION},"id":"'

    def __call__(self, kind: str, rel: bytes, size: int, mtime_ns: int, ino: int) -> bytes:
        heads = self._heads
        if heads is None or mtime_ns < 0:
            return self._general(kind, rel, size, mtime_ns, ino)
        try:
            rel_j = _json_str(rel.decode("utf-8"))
        except UnicodeDecodeError:
            return self._general(kind, rel, size, mtime_ns, ino)
        data = b"%s\0%s\0%s\0%d\0%d\0%d" % (self._source_b, rel, kind.encode(), size, mtime_ns, ino)
        eid = blake2b(data, digest_size=16).hexdigest()
        line = self._open + eid + heads[kind] + rel_j[1:] + ',"rel":' + rel_j
        if kind != "deleted":
            us = mtime_ns // 1000
            line += f',"size":{size},"mtime":{us // 1000000}.{us % 1000000:06d},"mtime_ns":"{mtime_ns}","ino":{ino}'
        return (line + self._tail).encode("utf-8")

    def _general(self, kind: str, rel: bytes, size: int, mtime_ns: int, ino: int) -> bytes:
        return encode(file_event(kind, self.source, self.root, rel, FileStat(size, mtime_ns, ino), self.via))

    def skipped(self, kind: str, rel: bytes, size: int, mtime_ns: int, ino: int, reason: str) -> bytes:
        """The event of a path fc-watch will not publish (docs/events.md, "Symlinks"):
        ``created`` with ``error`` (nothing to send, the failure recorded downstream), or
        ``deleted`` when the path held a published file (its copies must go).  Rare:
        the general path."""
        ev = file_event(kind, self.source, self.root, rel, FileStat(size, mtime_ns, ino), self.via)
        return encode(mark_skipped(ev, reason))


SKIP_MESSAGES = {"symlink-outside-root": "a symlink to a file outside the source root: not published"}


def mark_skipped(ev: Event, reason: str) -> Event:
    """Make ``ev`` say that its path is not published, and why (docs/events.md, "Symlinks")."""
    if ev["kind"] != "deleted":
        ev["error"] = SKIP_MESSAGES.get(reason, reason)
        ev["error_kind"] = "source"
    ev["skipped"] = reason
    return ev


def encode_file_event(kind: str, source: str, root: bytes, rel: bytes, st: FileStat, via: str) -> bytes:
    """One fc-watch event line (see FileEventEncoder, which a scan keeps per source)."""
    return FileEventEncoder(source, root, via)(kind, rel, st.size, st.mtime_ns, st.ino)


def join(root: bytes, rel: bytes) -> bytes:
    return root.rstrip(b"/") + b"/" + rel if root != b"/" else b"/" + rel


# -- writing -------------------------------------------------------------------------


# json.dumps with these arguments builds a new encoder on every call; every stage encodes lines, so one is kept.
# ensure_ascii=False keeps names readable; lone surrogates cannot occur because undecodable names travel as
# *_b64 (put_path), so the UTF-8 encode is safe.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# What _encoder.encode builds on every call (the C encoder, with a dict to find cycles), built once: an event
# is a tree (parsed from a line, or made by our code), so no cycle check.  None without the C accelerator.
_c_encode = (
    c_make_encoder(None, _encoder.default, _json_str, None, ":", ",", False, False, True)
    if c_make_encoder is not None
    else None
)


def encode(event: Event) -> bytes:
    """One event as one line of bytes, newline included."""
    text = "".join(_c_encode(event, 0)) if _c_encode is not None else _encoder.encode(event)
    return (text + "\n").encode("utf-8")


_HOP_HEADS: dict[tuple[str, str], bytes] = {}  # (from, epoch) -> the JSON of a hop up to its seq


def hop_json(hop: dict) -> bytes:
    """``hop`` as ``encode`` writes it (UTF-8).  A hop of the usual shape (from, epoch, seq, in that order) is
    built from its writer's part, kept per writer: a stage passing lines on writes and compares two hops per
    line, and json.dumps of each cost more than the rest of passing the line on."""
    if len(hop) == 3:
        origin, epoch, seq = hop.get("from"), hop.get("epoch"), hop.get("seq")
        if type(origin) is str and type(epoch) is str and type(seq) is int and tuple(hop) == _HOP_KEYS:
            return b"%s%d}" % (hop_head(origin, epoch), seq)
    return _encoder.encode(hop).encode("utf-8")


def hop_head(origin: str, epoch: str) -> bytes:
    """The JSON of a hop from ``origin`` and ``epoch`` (from, epoch, seq, in that order) up to its seq."""
    head = _HOP_HEADS.get((origin, epoch))
    if head is None:
        if len(_HOP_HEADS) >= 256:  # forged hops could name endless writers
            _HOP_HEADS.clear()
        head = f'{{"from":{_json_str(origin)},"epoch":{_json_str(epoch)},"seq":'.encode()
        _HOP_HEADS[(origin, epoch)] = head
    return head


_HOP_KEYS = ("from", "epoch", "seq")


def rehop(line: bytes, old: object, hop: dict, more: bytes = b"", hop_bytes: bytes | None = None) -> bytes | None:
    """``line``, an event line as read, with its ``hop`` replaced by ``hop``: the event passes on as it came,
    bytes and all, without being encoded again.  ``old`` is the hop the line was decoded with (``MISSING``: it
    had none).  ``more``: members to add before the hop (``members``: what a stage added to the event).  None
    when the old hop is not the line's last member as we would encode it (then the caller encodes the event).
    Exact: a line ending in ``,"hop":<that object>}`` has it as its top-level object's last member (a ``"`` after
    a ``,`` starts a key, and the ``}`` before the newline closes the line's object).  ``hop_bytes``:
    ``hop_json(hop)``, when the caller has it (a stage's own hops: ``hop_head``, then the seq)."""
    if not line.endswith(b"}\n"):
        return None
    tail = b',"hop":' + (hop_bytes if hop_bytes is not None else hop_json(hop)) + b"}\n"
    if old is MISSING:
        return None if line[:-2].rstrip(b" \t\r\n").endswith(b"{") else line[:-2] + more + tail
    if type(old) is not dict:
        return None
    before = b',"hop":' + hop_json(old) + b"}\n"
    return line[: -len(before)] + more + tail if line.endswith(before) else None


def swap_hop(line: bytes, old_head: bytes, old_seq: int, new_tail: bytes, more: bytes = b"") -> bytes | None:
    """``rehop`` for a line whose hop is of the usual shape, without the decoded hop: ``line`` with its last
    member ``,"hop":`` + ``hop_head(from, epoch)`` + ``old_seq`` + ``}`` (``old_head`` is that up to the seq,
    the writer's part: one per writer) replaced by ``more`` + ``new_tail`` (``,"hop":...}}\n``, our hop and the
    line's end).  None when the line does not end so (then ``rehop``).  Exact as ``rehop`` is: bytes that end the
    line's object ``}\n`` right after that hop's ``}`` are its top-level object's last member, and decode to
    exactly that hop (a later duplicate key wins), whatever hop the caller was told it had."""
    end = b"%d}}\n" % old_seq
    cut = len(line) - len(end) - len(old_head)
    if cut > 0 and line.endswith(end) and line.startswith(old_head, cut):
        return line[:cut] + more + new_tail
    return None


def members(event: Event, fields: tuple[str, ...]) -> bytes:
    """``,"field":value`` for each of ``fields`` of ``event``, as ``encode`` writes them (for ``rehop``)."""
    out = []
    for f in fields:
        head = _MEMBER_HEADS.get(f)
        if head is None:
            if len(_MEMBER_HEADS) >= 256:
                _MEMBER_HEADS.clear()
            head = _MEMBER_HEADS[f] = f",{_json_str(f)}:"
        value = event[f]
        if type(value) is str:
            out.append(head + _json_str(value))
        elif type(value) is list:  # fc-process's "processed", on each line: no encoder call for a list of strings
            try:
                out.append(head + "[" + ",".join(map(_json_str, value)) + "]")
            except TypeError:  # (an item that is no string)
                out.append(head + _encoder.encode(value))
        else:
            out.append(head + _encoder.encode(value))
    return "".join(out).encode("utf-8")


_MEMBER_HEADS: dict[str, str] = {}  # field -> ',"field":'


MISSING = object()  # rehop: the line had no hop


# -- reading -------------------------------------------------------------------------


class BadLine(Value):
    """A line that could not be taken as an event: reported, never fatal."""

    __slots__ = ("lineno", "reason", "text")
    _fields = ("lineno", "reason", "text")

    def __init__(self, lineno: int, reason: str, text: bytes):
        self.lineno = lineno
        self.reason = reason
        self.text = text


# Known fields and the JSON types a reader accepts for them (docs/events.md), null
# meaning absent.  A line whose known field has another type is refused as a whole:
# taken, it would crash a stage later, in its commit or in the next stage, after it
# was stored.  _INT fields are also range-checked (SQLite stores 64-bit integers).
_STR = (str,)
_INT = (int,)
_NS = (str, int)  # mtime_ns: a string of digits (docs/events.md), an int tolerated
_TYPES: dict[str, tuple[type, ...]] = {
    **{f: _STR for f in ("root", "path", "rel", "name", "file", "remote")},
    **{f + "_b64": _STR for f in ("root", "path", "rel", "name", "file", "remote")},
    **{f: _STR for f in ("id", "source", "via", "server", "url", "error_kind", "transported", "hash")},
    **{f: _INT for f in ("size", "ino", "remote_size", "expected_size", "source_size")},
    "mtime": (int, float),
    "mtime_ns": _NS,
    "error": (str, dict),
    "processed": (list,),
}
_CONTAINERS = (dict, list)
# The fields that name a file (put_path/get_path): no file name holds a NUL byte, so a line with one in such a
# field is forged or broken.  Taken, it failed later, where the name met the system ("embedded null byte"): a
# stage's internal error, or a row that made every later fc-verify end (tests/security/test_recorded_rows.py).
_NAME_FIELDS = ("root", "path", "rel", "name", "file", "remote")
_B64_FIELDS = frozenset(f + "_b64" for f in _NAME_FIELDS)


def _b64_bytes(key: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is one
        raise EventError(f"field {key} is not valid base64") from None


def _check_name(key: str, raw: bytes) -> None:
    if b"\0" in raw:
        raise EventError(f"field {key} holds a NUL byte: no file is named so")


HOP_KEYS = frozenset(("from", "epoch", "seq", "for"))
MAX_INT = (1 << 63) - 1  # what SQLite stores as an INTEGER; every count, size and seq fits
_MAX_INT_TEXT = str(MAX_INT)  # 19 digits
MAX_DEPTH = 32  # nesting of objects and arrays; a real event has 3 (the event, its hop, hop.for)


def _finite(text: str) -> float:
    """json's parse_float: 1e400 would be inf, which no JSON writer may write back."""
    f = float(text)
    if f - f != 0:  # inf or nan
        raise ValueError(f"number out of range: {text[:40]}")
    return f


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)
_scan = _decoder.scan_once  # what _decoder.decode runs, without its two look-ups for white space
_JSON_SPACE = " \t\n\r"
_SPACE_RUN = re.compile(r"[ \t\n\r]*")


def _parse(raw: bytes) -> Any:
    """``raw`` parsed as JSON; EventError when it is not JSON.  A line as stages write it (an object from its
    first character, a newline after it) is scanned directly; anything else, errors included, goes through
    the decoder's own ``decode``, which says what is wrong."""
    try:
        # decoded first: json.loads on bytes spends time guessing the encoding
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    try:
        obj, end = _scan(text, 0)
        n = len(text) - end
        if n == 0 or (n == 1 and text[end] == "\n") or not text[end:].strip(_JSON_SPACE):
            return obj
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return _decoder.decode(text)
    except ValueError as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise EventError("nested too deeply") from None


# The usual line: what fc-watch writes (FileEventEncoder), as fc-process and fc-transport pass it on (their members
# added before the hop: rehop), read by one regular expression instead of the JSON parser and decode's checks
# (about a third fewer instructions), and only when every byte is one decode takes as it is:
# - strings without escapes or control characters (so the text between the quotes is the string; valid UTF-8,
#   so no lone surrogate);
# - numbers as json writes them: integers of 1 to 18 digits without sign or leading zero (below MAX_INT), mtime
#   with a fraction and no exponent (finite: float() of the text, as _finite), mtime_ns a string of digits below
#   MAX_INT;
# - ``kind`` one of KINDS, each key once in this order, a hop of the usual shape, nothing before ``{`` or after
#   ``}`` but the newline.
# Any other line (a ``dropped`` line, a name that is not UTF-8, an error, a field more) is decoded in full.
# tests/unit/test_usual_line.py compares the two on generated lines, usual and hostile.
_CHAR_RE = r'[^"\\\x00-\x1f]'  # a character a JSON string holds as it is (not a quote, backslash or control)
_STR_RE = r'"(' + _CHAR_RE + r'*)"'  # a JSON string without escapes: its text is the string
_INT_RE = r"(0|[1-9][0-9]{0,17})"
_USUAL = re.compile(
    r'\{"v":1,"id":' + _STR_RE + r',"kind":"(created|modified|deleted)","source":' + _STR_RE
    + r',"root":' + _STR_RE + r',"path":' + _STR_RE + r',"rel":' + _STR_RE
    + r'(?:,"size":' + _INT_RE + r',"mtime":((?:0|[1-9][0-9]{0,15})\.[0-9]{1,17})'
    + r',"mtime_ns":"([0-9]{1,18}|[1-8][0-9]{18})","ino":' + _INT_RE + r")?"
    + r',"via":' + _STR_RE
    + r'(?:,"processed":(\[(?:"' + _CHAR_RE + r'*"(?:,"' + _CHAR_RE + r'*")*)?\]))?'
    + r'(?:,"name":' + _STR_RE + r")?"
    + r'(?:,"server":' + _STR_RE + r',"remote":' + _STR_RE + r',"url":' + _STR_RE + r',"transported":' + _STR_RE
    + r")?"
    + r',"hop":\{"from":' + _STR_RE + r',"epoch":' + _STR_RE + r',"seq":' + _INT_RE + r"\}\}\n"
)  # fmt: skip


def _usual(raw: bytes) -> Event | None:
    """The event of a usual line (see _USUAL), as decode gives it; None for any other line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    m = _USUAL.fullmatch(text)
    if m is None:
        return None
    (eid, kind, source, root, path, rel, size, mtime, ns, ino, via, processed, name, server, remote, url, done,
     origin, epoch, seq) = m.groups()  # fmt: skip
    ev: Event = {"v": VERSION, "id": eid, "kind": kind, "source": source, "root": root, "path": path, "rel": rel}
    if size is not None:
        ev["size"], ev["mtime"], ev["mtime_ns"], ev["ino"] = int(size), float(mtime), ns, int(ino)
    ev["via"] = via
    if processed is not None:  # ["a","b"]: its strings hold no quote
        ev["processed"] = processed[2:-2].split('","') if len(processed) > 2 else []
    if name is not None:
        ev["name"] = name
    if server is not None:
        ev["server"], ev["remote"], ev["url"], ev["transported"] = server, remote, url, done
    ev["hop"] = {"from": origin, "epoch": epoch, "seq": int(seq)}
    return ev


# The usual line's head: what fc-filter reads of fc-watch's line, recognised by one regular expression (issue 18).
#
# A pass-through fc-filter decides each line from its kind, path, rel, root and size, and needs its hop only to
# mark the last lines it dropped; ``events.decode`` parses the whole line with the JSON parser and checks every
# field, about three quarters of fc-filter's CPU per line.  The line fc-watch writes (events.FileEventEncoder: a
# created, modified or deleted event of its fixed fields in its fixed order, a hop of the usual shape at its end)
# is matched here instead, in one pass of the regular-expression engine, and only when every byte of it is one
# that ``events.decode`` takes as it is:
#
# - strings of ASCII without control characters, ``"`` or ``\\``: no escape, so the bytes are the string (a name
#   that is not ASCII, or holds a quote, a backslash or a control character, goes to ``events.decode``);
# - numbers as JSON writes them (no leading zero, no sign), integers of at most 18 digits (below events.MAX_INT),
#   ``mtime`` a plain decimal (finite), ``mtime_ns`` a string of at most 19 digits not above MAX_INT;
# - each key once, in fc-watch's order, nothing before ``{`` or after ``}`` but the newline.
#
# So a line matched is one ``events.decode`` takes, with the same values (tests/filter/test_usual.py compares the
# two on generated lines); any other line, a bad one included, is decoded and checked there as before, and a bad
# line is reported with its number.
_HS = rb'"([\x20\x21\x23-\x5b\x5d-\x7f]*)"'  # a JSON string without escapes: its bytes are its text
_HINT = rb"(0|[1-9][0-9]{0,17})"  # below events.MAX_INT (19 digits), as JSON writes it
_USUAL_HEAD = re.compile(
    rb'\{"v":1,"id":"[\x20\x21\x23-\x5b\x5d-\x7f]*","kind":"(created|modified|deleted)"'
    rb',"source":"[\x20\x21\x23-\x5b\x5d-\x7f]*","root":' + _HS + rb',"path":' + _HS + rb',"rel":' + _HS
    + rb'(?:,"size":' + _HINT + rb',"mtime":(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,9})?,"mtime_ns":"([0-9]{1,19})"'
    rb',"ino":' + _HINT + rb")?"
    rb',"via":"[\x20\x21\x23-\x5b\x5d-\x7f]*","hop":\{"from":' + _HS + rb',"epoch":' + _HS + rb',"seq":' + _HINT
    + rb"\}\}\n"
)  # fmt: skip


def usual_head(line: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the fields fc-filter decides by, the hop) of a line of fc-watch's usual shape, as ``decode``
    gives them; None for any other line (then ``decode``, which says what is wrong with a bad one)."""
    m = _USUAL_HEAD.fullmatch(line)
    if m is None:
        return None
    kind, root, path, rel, size, ns, _, origin, epoch, seq = m.groups()
    if ns is not None and len(ns) == 19 and int(ns) > MAX_INT:
        return None  # (events.decode refuses it: out of range)
    if (kind == b"deleted") != (size is None):
        return None  # (fc-watch writes size, mtime and ino for every event but a deletion: anything else decoded)
    ev = {"kind": kind.decode(), "root": root.decode(), "path": path.decode(), "rel": rel.decode()}
    if size is not None:
        ev["size"] = int(size)
    return ev, {"from": origin.decode(), "epoch": epoch.decode(), "seq": int(seq)}


def decode(line: bytes) -> Event:
    """Parse and validate one line (without or with its newline).

    Everything a stage could not carry through (its state file, its output) is refused
    here, before the line is stored: bytes that are not UTF-8, a lone surrogate escape
    anywhere, nesting deeper than MAX_DEPTH, non-finite numbers, known fields of the
    wrong type, integers past MAX_INT, a malformed ``hop``.  What depends only on the
    event's shape (its fields and their types, in order) is judged once per shape
    (``_Plan``); a line of a known shape pays only for the checks of its values, and the
    checks that walk the whole object run only when a cheap look says they may be
    needed: every line is decoded by every stage.
    """
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
    usual = _usual(raw)
    if usual is not None:
        return usual
    return _decode(raw)


def _decode(raw: bytes) -> Event:
    """decode in full: the JSON parser, then every check."""
    ev = _parse(raw)
    if type(ev) is not dict:
        raise EventError("not a JSON object")
    # A stream repeats a handful of shapes, so most lines cost one lookup here.
    shape = (*ev, *map(type, ev.values())) if len(ev) <= MAX_CACHED_FIELDS else None
    plan = _PLANS.get(shape) if shape is not None else None
    if plan is None:
        plan = _Plan(ev)  # raises EventError for a field of the wrong type (v and kind first)
        if shape is not None:
            if len(_PLANS) >= 512:  # hostile input can make endless shapes
                _PLANS.clear()
            _PLANS[shape] = plan
    kind = ev["kind"]  # (there, and a string: the plan says so)
    if ev["v"] != VERSION or kind not in _ALL_KINDS:
        _check_head(ev)  # raises, saying which
    for key in plan.ints:
        if not 0 <= ev[key] <= MAX_INT:
            raise EventError(f"field {key!r} is out of range (0 to {MAX_INT}): {_short(ev[key])}")
    if plan.mtime_ns:
        value = ev["mtime_ns"]
        # (19 digits, today's times in ns, compared as text: digit strings of one length sort as their numbers)
        quick = type(value) is str and 0 < len(value) <= 19 and value.isdigit() and value.isascii()
        if not (quick and (len(value) < 19 or value <= _MAX_INT_TEXT)) and not _small_int(value):
            raise EventError(f"field 'mtime_ns' is not an integer from 0 to {MAX_INT}: {_short(value)}")
    if plan.nested and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(ev) > MAX_DEPTH:
        raise EventError(f"nested deeper than {MAX_DEPTH} levels")
    for key in plan.nulls:
        del ev[key]
    for key in plan.b64:
        _check_name(key, _b64_bytes(key, ev[key]))
    if b"\\u0000" in raw:  # (JSON carries a NUL in a string only escaped)
        for key in _NAME_FIELDS:
            value = ev.get(key)
            if type(value) is str and "\0" in value:
                _check_name(key, b"\0")
    if b"\\" in raw and b"\\u" in raw and _has_surrogate(ev):  # one byte is cheaper to look for than two
        # JSON may escape half of a UTF-16 pair alone; no file name or text we could write has one
        raise EventError("a string holds a lone surrogate escape (not Unicode text)")
    if plan.hop:
        hop = ev["hop"]
        # the usual hop: exactly from, epoch and seq when all three are found, so nothing nests
        seq = hop.get("seq")
        if (
            len(hop) != 3
            or type(seq) is not int
            or not 0 <= seq <= MAX_INT
            or type(hop.get("from")) is not str
            or type(hop.get("epoch")) is not str
        ):
            _check_hop(hop)
    if kind == DROPPED:  # no file: only its hop says anything
        if not plan.hop:
            raise EventError("a 'dropped' line without a hop")
        return ev
    if kind == RESEND:  # no file, no hop: a request to the reader
        if plan.hop:  # (no stage writes one: taken, its hop moved a mark, and a stage without split() crashed)
            raise EventError("a 'resend' line with a hop")
        return ev
    if not plan.path:
        # (a plain string is a path get_path takes: it holds no lone surrogate, looked for above)
        get_path(ev, "path")  # raises EventError when missing or malformed
    return ev


_PLANS: dict[tuple, _Plan] = {}
MAX_CACHED_FIELDS = 64  # a shape with more fields is judged each time: 512 huge shapes would hold much memory
_ALL_KINDS = frozenset((*KINDS, DROPPED, RESEND))


def _check_head(ev: Event) -> None:
    """Raises EventError when ``ev`` is not of our version, or of no kind we know."""
    v = ev.get("v")
    if v != VERSION or type(v) is not int:
        raise EventError(f"unsupported event version {_short(v)} (this program reads v{VERSION})")
    kind = ev.get("kind")
    if type(kind) is not str or kind not in _ALL_KINDS:
        raise EventError(f"unknown kind {_short(kind)} (expected one of {', '.join(KINDS)})")


class _Plan:
    """What one shape of event (its fields and their types, in order) leaves to check on each line: the int
    fields to range-check, whether mtime_ns is there to check, whether something nests (then the depth check
    may run), whether it has a hop (an object), and whether its ``path`` is a plain string (a path as it is).
    Made only for a shape with ``v`` an int and ``kind`` a string, its known fields of their types: raises
    EventError otherwise."""

    __slots__ = ("b64", "hop", "ints", "mtime_ns", "nested", "nulls", "path")

    def __init__(self, ev: Event):
        _check_head(ev)
        ints: list[str] = []
        b64: list[str] = []
        nulls: list[str] = []
        self.mtime_ns = self.nested = False
        for key, value in ev.items():
            types = _TYPES.get(key)
            if types is None:
                if type(value) in _CONTAINERS and key != "hop":  # hop: _check_hop
                    self.nested = True
                continue
            if type(value) not in types:
                if value is None:  # null: as if absent (and made absent: a stage asks ``"name" in ev``)
                    nulls.append(key)
                    continue
                raise EventError(
                    f"field {key!r} is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}"
                )
            if types is _INT:
                ints.append(key)
            elif types is _NS:
                self.mtime_ns = True
            elif type(value) in _CONTAINERS:
                self.nested = True
            elif key in _B64_FIELDS:
                b64.append(key)
        self.ints = tuple(ints)
        self.b64 = tuple(b64)
        self.nulls = tuple(nulls)
        hop = ev.get("hop")
        if hop is not None and type(hop) is not dict:
            raise EventError("field 'hop' is not an object")
        self.hop = hop is not None
        self.path = type(ev.get("path")) is str and "path_b64" not in ev


def _check_hop(hop: object) -> None:
    if type(hop) is not dict:
        raise EventError("field 'hop' is not an object")
    if len(hop) == 3:  # the usual hop: exactly from, epoch and seq when all three are found, so nothing nests
        seq = hop.get("seq")
        if type(hop.get("from")) is str and type(hop.get("epoch")) is str and type(seq) is int and 0 <= seq <= MAX_INT:
            return
    if not HOP_KEYS.issuperset(hop) and _depth(hop) > MAX_DEPTH - 1:
        raise EventError(f"nested deeper than {MAX_DEPTH} levels")
    seq = hop.get("seq")
    if type(hop.get("from")) is not str or type(hop.get("epoch")) is not str or type(seq) is not int:
        raise EventError("field 'hop' needs from and epoch (strings) and seq (an integer)")
    if not 0 <= seq <= MAX_INT:
        raise EventError(f"hop.seq is out of range: {_short(seq)}")
    tag = hop.get("for")
    if tag is not None and (type(tag) is not list or not all(type(t) is str for t in tag)):
        raise EventError("hop.for is not a list of strings")


def _small_int(value: object) -> bool:
    """A count, size or nanosecond time: an int, or (mtime_ns) a string of ASCII digits."""
    if type(value) is str:
        return 0 < len(value) <= 19 and value.isascii() and value.isdigit() and int(value) <= MAX_INT
    return type(value) is int and 0 <= value <= MAX_INT  # type: ignore[operator]


def _depth(obj: object) -> int:
    """How deeply objects and arrays nest in ``obj`` (iterative: no recursion limit)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        node, d = todo.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, d)
        if d <= MAX_DEPTH:
            todo.extend((child, d + 1) for child in node)
    return deepest


def _has_surrogate(obj: object) -> bool:
    todo = [obj]
    while todo:
        node = todo.pop()
        if isinstance(node, str):
            if not _encodes(node):
                return True
        elif isinstance(node, dict):
            todo.extend(node.keys())
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return False


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- a whole line glued to a torn one -------------------------------------------------

# A writer killed in the middle of a line leaves its start in the pipe or FIFO; the next writer's first line, when
# that writer was already there (a FIFO's reader sees no end of input between them), comes glued to it:
# ``{"v":1,...,"path":"/r/a.c{"v":1,...,"rel":"b.css"}\n``.  File Conveyor's writers write whole lines of up to
# PIPE_BUF bytes atomically (delivery/writer.py); a longer line, or a third-party writer, can still tear one.  The
# torn start is lost (its writer did not see it delivered and sends it again); the whole line after it is taken.
# It is looked for only in a line that is not an event, from its end, at the places where an event starts
# (``{"``), GLUED_TRIES of them at most: each try decodes the rest of the line, so a hostile line (megabytes of
# ``{"``) costs at most GLUED_TRIES decodes of its length, never one per place.  A real event has two or three
# ``{"`` of its own (its start, its hop, an error object) which are tried first and fail at once.
GLUED_TRIES = 16
OUR_TRIES = 4  # places where a line of ours starts, tried first (_glued_starts)
TORN_START = "the torn start of a line (its writer died mid-line?), a whole line glued to it taken"
_EVENT_START = b'{"'
_OUR_START = b'{"v":'  # how events.encode and every writer of ours start a line


class Glued(NamedTuple):
    """A line that is not an event, split: the torn start of a line, and the whole event line that ends it."""

    torn: bytes
    line: bytes
    event: Event


def _glued_starts(line: bytes) -> Iterator[int]:
    """The places to try, from the end of the line (from 1: the line from 0 is what was refused): first
    OUR_TRIES where an event starts as every writer of ours starts it (``{"v":``), then GLUED_TRIES of the
    others (``{"``).  An event holding many objects of its own (a stylesheet's references) is found past them
    all that way; and as the places of the second round are the line's own first, a line with fewer than
    GLUED_TRIES objects is always found, whatever its torn start holds."""
    tried = set()
    at = len(line)
    while len(tried) < OUR_TRIES:
        at = line.rfind(_OUR_START, 1, at)
        if at < 0:
            break
        tried.add(at)
        yield at
    at, tries = len(line), 0
    while tries < GLUED_TRIES:
        at = line.rfind(_EVENT_START, 1, at)
        if at < 0:
            return
        if at not in tried:
            tries += 1
            yield at


def unglue(line: bytes) -> Glued | None:
    """For a line that ``decode`` refused: the whole event line that ends it after a torn start, decoded (as
    ``decode`` takes it: every check), or None when there is none within GLUED_TRIES places.  Never splits a
    line that decodes (call it only after ``decode`` refused ``line``); what it takes is a valid event from one
    of its starts to the end of the line, newline included, as if it had come on a line of its own."""
    # an event line ends with "}": no other line has one glued at its end (and most bad lines stop here)
    if not line.rstrip(b" \t\r\n").endswith(b"}"):
        return None
    for at in _glued_starts(line):
        rest = line[at:]
        # First only scanned, as far as its first error (``decode`` scans twice to say what is wrong, and decodes
        # UTF-8 twice).  Latin-1, one character per byte: JSON's structure is ASCII and the scanner takes any
        # character from 0x20 in a string, so what is valid JSON in UTF-8 scans the same.  (The rest of the line,
        # not the line from ``at``: a scanner's error counts the lines before its place.)
        text = rest.decode("latin-1")
        try:
            end = _scan(text, 0)[1]
        except (StopIteration, ValueError, RecursionError):
            continue
        if _SPACE_RUN.match(text, end).end() != len(text):  # type: ignore[union-attr]  # (always matches)
            continue  # a value that ends before the line does (an object inside the line's)
        try:
            return Glued(line[:at], rest, decode(rest))  # every check, UTF-8 included
        except EventError:
            continue
    return None


def events_from(lines: Iterable[bytes], on_bad: Callable[[BadLine], None]) -> Iterator[Event]:
    """Events from lines (each with its newline); a bad line goes to ``on_bad`` with
    its line number and the stream goes on.

    A last line without its newline is a torn write (the writer died mid-line): it is
    never taken as an event, even when it happens to parse.  A line that is not an event
    but ends in a whole one after a torn start (``unglue``): the torn start goes to
    ``on_bad``, the event is taken.
    """
    for lineno, line in enumerate(lines, 1):
        if not line.endswith(b"\n"):
            length = getattr(line, "length", None)  # a streams.LongLine: skipped while it was read
            if length is not None:
                on_bad(BadLine(lineno, f"{length} bytes, longer than the line length limit", line))
            else:
                on_bad(BadLine(lineno, "incomplete last line (no newline): the writer died mid-line?", line))
            continue
        if not line.strip():
            continue
        try:
            ev = decode(line)
        except EventError as exc:
            glued = unglue(line)
            if glued is None:
                on_bad(BadLine(lineno, str(exc), line))
                continue
            on_bad(BadLine(lineno, TORN_START, glued.torn))
            ev = glued.event
        yield ev
