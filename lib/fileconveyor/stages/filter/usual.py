"""fc-filter's reading of the usual line: fc-watch's, recognised by one regular expression (issue 18).

A pass-through fc-filter decides each line from its kind, path, rel, root and size, and needs its hop only to
mark the last lines it dropped; ``events.decode`` parses the whole line with the JSON parser and checks every
field, about three quarters of fc-filter's CPU per line.  The line fc-watch writes (events.FileEventEncoder: a
created, modified or deleted event of its fixed fields in its fixed order, a hop of the usual shape at its end)
is matched here instead, in one pass of the regular-expression engine, and only when every byte of it is one
that ``events.decode`` takes as it is:

- strings of ASCII without control characters, ``"`` or ``\\``: no escape, so the bytes are the string (a name
  that is not ASCII, or holds a quote, a backslash or a control character, goes to ``events.decode``);
- numbers as JSON writes them (no leading zero, no sign), integers of at most 18 digits (below events.MAX_INT),
  ``mtime`` a plain decimal (finite), ``mtime_ns`` a string of at most 19 digits not above MAX_INT;
- each key once, in fc-watch's order, nothing before ``{`` or after ``}`` but the newline.

So a line matched is one ``events.decode`` takes, with the same values (tests/filter/test_usual.py compares the
two on generated lines); any other line, a bad one included, is decoded and checked there as before, and a bad
line is reported with its number.
"""

from __future__ import annotations

import re
from typing import Any

from ... import events as E

_S = rb'"([\x20\x21\x23-\x5b\x5d-\x7f]*)"'  # a JSON string without escapes: its bytes are its text
_INT = rb"(0|[1-9][0-9]{0,17})"  # below events.MAX_INT (19 digits), as JSON writes it
_USUAL = re.compile(
    rb'\{"v":1,"id":"[\x20\x21\x23-\x5b\x5d-\x7f]*","kind":"(created|modified|deleted)"'
    rb',"source":"[\x20\x21\x23-\x5b\x5d-\x7f]*","root":' + _S + rb',"path":' + _S + rb',"rel":' + _S
    + rb'(?:,"size":' + _INT + rb',"mtime":(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,9})?,"mtime_ns":"([0-9]{1,19})"'
    rb',"ino":' + _INT + rb")?"
    rb',"via":"[\x20\x21\x23-\x5b\x5d-\x7f]*","hop":\{"from":' + _S + rb',"epoch":' + _S + rb',"seq":' + _INT
    + rb"\}\}\n"
)  # fmt: skip
_MAX_NS = E.MAX_INT


def usual(line: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the fields fc-filter decides by, the hop) of a line of fc-watch's usual shape, as ``events.decode``
    gives them; None for any other line (then ``events.decode``, which says what is wrong with a bad one)."""
    m = _USUAL.fullmatch(line)
    if m is None:
        return None
    kind, root, path, rel, size, ns, _, origin, epoch, seq = m.groups()
    if ns is not None and len(ns) == 19 and int(ns) > _MAX_NS:
        return None  # (events.decode refuses it: out of range)
    if (kind == b"deleted") != (size is None):
        return None  # (fc-watch writes size, mtime and ino for every event but a deletion: anything else decoded)
    ev = {"kind": kind.decode(), "root": root.decode(), "path": path.decode(), "rel": rel.decode()}
    if size is not None:
        ev["size"] = int(size)
    return ev, {"from": origin.decode(), "epoch": epoch.decode(), "seq": int(seq)}
