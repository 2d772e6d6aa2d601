"""A whole line glued to the torn start of another (a writer killed mid-line, the next writer already on the FIFO):
the reader takes the whole line and reports the torn start (events.unglue, through events_from as every reading
path calls it).  Never a line that decodes split, never something taken that is not a whole valid event, and a
bounded number of tries on any line (counted here: no timing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fileconveyor import events as E
from tests.unit.test_usual_line import exact, usual_line

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogate: a name we carry
_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)  # no NUL either
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_RESERVED = {"v", "kind", "hop", *E._TYPES}


@st.composite
def event_lines(draw: st.DrawFn) -> bytes:
    """A valid event line, as our writers and a third party's write it: fc-watch's usual line, ``encode``, or
    json.dumps (spaces, ASCII escapes), with fields of every type, nested ones, names with ``{`` and ``"``."""
    style = draw(st.sampled_from(["usual", "encode", "dumps"]))
    if style == "usual":
        rel = draw(
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=20)
        ).encode()
        return usual_line(draw(st.sampled_from(E.KINDS)), rel, draw(st.integers(0, 10**12)),
                          draw(st.integers(0, 2 * 10**18)), draw(st.integers(0, 10**9)), draw(st.integers(0, 10**9)),
                          None, None, False)  # fmt: skip
    ev: dict = {"v": 1, "kind": draw(st.sampled_from(E.KINDS)), "path": "/r/" + draw(_NAME)}
    for key in draw(st.lists(st.sampled_from(["id", "source", "root", "rel", "size", "error"]), unique=True)):
        ev[key] = draw(st.integers(0, E.MAX_INT)) if key == "size" else draw(_NAME if key in ("root", "rel") else _TEXT)
    extra = draw(st.dictionaries(_TEXT.filter(lambda k: k not in _RESERVED), _JSON, max_size=3))
    ev.update(extra)
    if draw(st.booleans()):
        ev["hop"] = {"from": draw(_TEXT), "epoch": draw(_TEXT), "seq": draw(st.integers(0, E.MAX_INT))}
        if draw(st.booleans()):
            ev["hop"]["for"] = draw(st.lists(_TEXT, max_size=2))
    line = E.encode(ev) if style == "encode" else json.dumps(ev).encode() + b"\n"
    E.decode(line)  # (valid: raises otherwise)
    return line


@dataclass
class Work:
    scans: int = 0  # direct scans (one per try) and those of the decodes
    scanned: int = 0  # characters handed to the scanner
    decodes: int = 0


@contextmanager
def counted() -> Iterator[Work]:
    """The real scanner and decode, counted while unglue runs (its tries: one scan each, and a decode for a
    value that reaches the end of the line)."""
    work = Work()
    scan, decode = E._scan, E.decode

    def counting_scan(text: str, at: int) -> tuple[object, int]:
        work.scans += 1
        work.scanned += len(text) - at
        return scan(text, at)

    def counting_decode(line: bytes) -> E.Event:
        work.decodes += 1
        return decode(line)

    E._scan, E.decode = counting_scan, counting_decode  # type: ignore[assignment]
    try:
        yield work
    finally:
        E._scan, E.decode = scan, decode  # type: ignore[assignment]


def read(line: bytes) -> tuple[list[object], list[tuple[int, str, bytes]]]:
    """What a reader takes of ``line`` and what it reports (the shared path: events_from)."""
    bad: list[E.BadLine] = []
    got = [exact(ev) for ev in E.events_from([line], bad.append)]
    return got, [(b.lineno, b.reason, b.text) for b in bad]


def object_starts(line: bytes) -> int:
    """The places after a line's first where an event may start: each one a try, from the end."""
    return line.count(b'{"', 1)


@settings(max_examples=300)
@given(event_lines(), event_lines(), st.integers(0, 1 << 20))
@example(
    b'{"v":1,"kind":"created","source":"s","root":"/r","path":"/r/a.c"}\n',
    b'{"v":1,"kind":"created","source":"s","root":"/r","path":"/r/b.css","rel":"b.css"}\n',
    44,
)
def test_a_whole_line_after_a_torn_start_is_taken(whole: bytes, line: bytes, k: int) -> None:
    torn = whole[: 1 + k % (len(whole) - 1)]  # the start of a valid line, any byte of it (half a character too)
    got, bad = read(torn + line)
    if object_starts(line) < E.GLUED_TRIES:
        assert got == [exact(E.decode(line))]
        assert bad == [(1, E.TORN_START, torn)]
    else:  # more places inside the line than tries: lost, the whole line reported (never something else)
        assert got in ([], [exact(E.decode(line))])


_PIECES = [b"{", b"}", b'"', b'{"', b'\\"', b"\\", b":", b",", b"[", b"]", b"1", b" ", b"\xc3", b"\xa9",
           b'{"v":1,', b'"kind":"created"', b'"path":"/p"', b',"hop":{"from":"w","epoch":"e","seq":1}}',
           b'{"v":1,"kind":"deleted","path":"/q"}', b"\\ud800"]  # fmt: skip


@settings(max_examples=500)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=40),
    st.lists(st.tuples(st.integers(0, 40), event_lines()), max_size=2),
    st.booleans(),
)
def test_any_line_is_taken_whole_or_split_at_an_event_never_otherwise(
    pieces: list[bytes], lines: list[tuple[int, bytes]], brace: bool
) -> None:
    for at, whole in lines:  # whole lines among the pieces, without their newline (a line may end in one)
        pieces.insert(at, whole[:-1])
    line = b"".join(pieces) + (b"}" if brace else b"") + b"\n"
    try:
        today = exact(E.decode(line))
    except E.EventError as exc:
        today = None
        reason = str(exc)
    with counted() as work:
        got, bad = read(line)
    if not line.strip():  # a blank line: nothing
        assert got == [] and bad == []
        return
    if today is not None:  # a line that decodes is taken as it is: never split, never reported
        assert got == [today] and bad == [] and work.scans <= 1 and work.decodes == 1
        return
    assert work.decodes <= 1 + E.GLUED_TRIES and work.scans <= 1 + 2 * E.GLUED_TRIES
    if not got:
        assert bad == [(1, reason, line)]
        return
    # taken: a whole valid event from one of its starts to the end of the line, the rest reported
    ((_, why, torn),) = bad
    rest = line[len(torn) :]
    assert why == E.TORN_START and torn and rest.startswith(b'{"') and got == [exact(E.decode(rest))]


@pytest.mark.parametrize(
    "line",
    [
        b"{" * (16 << 20) + b"}\n",
        b'{"' * (8 << 20) + b"}\n",
        b'{"\\"' * (4 << 20) + b"}\n",
        b'{"a":' * (3 << 20) + b"1}\n",
        b'{"a":"{",' * (2 << 20) + b'"b":1}\n',
        b'{"a":' * 40 + b'"' + b"x" * (4 << 20) + b"}\n",  # each try scans a long string to its end: the worst
        b'{"v":1,"kind":"created","path":"/p","x":' + b'{"y":{"z":1},' * (1 << 20) + b"}}\n",
        b'{"v":1,"x":' * (3 << 20) + b"1}\n",  # our start everywhere: tried first, OUR_TRIES of them
        b'{"v":"' + b"x" * (4 << 20) + b'{"v":' * 40 + b"}\n",
    ],
    ids=[
        "braces",
        "starts",
        "quotes",
        "nested",
        "strings-ending-in-brace",
        "long-string",
        "json-not-event",
        "our-starts",
        "our-starts-after-a-long-string",
    ],
)
def test_a_hostile_line_costs_at_most_a_few_tries(line: bytes) -> None:
    tries = E.GLUED_TRIES + E.OUR_TRIES
    with counted() as work:
        assert E.unglue(line) is None
    assert work.scans <= 2 * tries and work.decodes <= tries
    assert work.scanned <= tries * len(line)  # linear in the line: never a scan from each of its places


def test_an_event_with_many_objects_of_its_own_is_found() -> None:
    """Where a line of ours starts (``{"v":``) is tried first: an event holding more objects than GLUED_TRIES (a
    stylesheet's references, say), each a ``{"`` nearer the end, is still found after a torn start, at the first try."""
    whole = b'{"v":1,"kind":"created","path":"/p","x":[' + b",".join([b'{"a":1}'] * 100) + b"]}\n"
    with counted() as work:
        assert E.unglue(b'{"v":1,"pa' + whole) == E.Glued(b'{"v":1,"pa', whole, E.decode(whole))
    assert work.scans < E.GLUED_TRIES  # (the one try, and decode's own scans of the line found)


def test_the_tries_stop_at_the_bound() -> None:
    """The other places are tried from the end of the line, GLUED_TRIES of them: an event that does not start as
    ours do (a writer of someone else's, ``v`` not first) with that many objects of its own (each tried first,
    each ending before the line) is not found after a torn start; one fewer, it is."""

    def event(objects: int) -> bytes:
        return b'{"kind":"created","v":1,"path":"/p","x":[' + b",".join([b'{"a":1}'] * objects) + b"]}\n"

    near, far = event(E.GLUED_TRIES - 1), event(E.GLUED_TRIES)
    assert E.unglue(b'{"v":1,"pa' + near) == E.Glued(b'{"v":1,"pa', near, E.decode(near))
    with counted() as work:
        assert E.unglue(b'{"v":1,"pa' + far) is None
    assert work.scans == E.GLUED_TRIES and work.decodes == 0


def test_a_torn_start_in_a_stream_keeps_the_numbers_of_the_lines_after_it() -> None:
    good = b'{"v":1,"kind":"created","path":"/a"}\n'
    glued = b'{"v":1,"kind":"created","path":"/b' + b'{"v":1,"kind":"deleted","path":"/c"}\n'
    bad: list[E.BadLine] = []
    got = list(E.events_from([good, glued, good, b"not json\n"], bad.append))
    assert [ev["path"] for ev in got] == ["/a", "/c", "/a"]
    assert [(b.lineno, b.text) for b in bad] == [(2, b'{"v":1,"kind":"created","path":"/b'), (4, b"not json\n")]
