"""events.decode reads the usual line (fc-watch's, as fc-process and fc-transport pass it on) with one regular
expression instead of the JSON parser and its checks (events._usual): every line it takes, the full decode takes
with the same event (keys in the same order, values of the same types); any other line is decoded in full."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fileconveyor import events as E

_HOP = b',"hop":{"from":"/s/watch.db","epoch":"ab12","seq":%d}}\n'


def exact(value: object) -> object:
    """``value`` with the type of every part and the order of every object's keys made part of its equality."""
    if type(value) is dict:
        return ("dict", [(k, exact(v)) for k, v in value.items()])
    if type(value) is list:
        return ("list", [exact(v) for v in value])
    return (type(value).__name__, value)


def full_or_error(line: bytes) -> object:
    try:
        return exact(E._decode(line))
    except E.EventError:
        return "refused"


def decoded_or_error(line: bytes) -> object:
    try:
        return exact(E.decode(line))
    except E.EventError:
        return "refused"


def usual_line(
    kind: str,
    rel: bytes,
    size: int,
    mtime_ns: int,
    ino: int,
    seq: int,
    processed: list[str] | None,
    name: str | None,
    sent: bool,
) -> bytes:
    """A line as fc-watch writes it, then as fc-process and fc-transport pass it on (their members added)."""
    line = E.FileEventEncoder("src", b"/srv/www", "scan")(kind, rel, size, mtime_ns, ino)[:-2]
    more: dict = {}
    if processed is not None:
        more["processed"] = processed
    if name is not None:
        more["name"] = name
    if sent:
        more.update(server="file", remote=rel.decode("utf-8", "replace"), url="file:///d/x", transported="uploaded")
    return line + E.members(more, tuple(more)) + _HOP % seq


_NAMES = st.binary(max_size=12) | st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass"))
_PLAIN = st.text(st.characters(blacklist_characters='"\\', blacklist_categories=("Cc", "Cs")), max_size=8)
_LINES = st.builds(
    usual_line,
    st.sampled_from(E.KINDS),
    _NAMES,
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1) | st.just(1796528569239596100),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.none() | st.lists(st.text(max_size=4), max_size=3),
    st.none() | st.text(max_size=6),
    st.booleans(),
)
# what a hostile writer might put anywhere in a line
_BYTES = st.sampled_from(
    [
        *(b"\\", b'"', b"\x00", b"\x1f", b"\n", b"\xff", b"\xed\xa0\x80", b" ", b"{", b"}", b"[", b"]", b",", b":"),
        *(b"0", b"9", b"-", b"e", b"E", b".", b"1e400", b"null", b'"v":2,', b'"kind":"dropped",', b'"size":-1,'),
        *(b"\\u", b"\\ud800", b'"size":4,', b'"x":1,', b"99999999999999999999"),
    ]
)


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """A usual line, with bytes inserted, removed or replaced here and there, or one of its members repeated."""
    line = bytearray(draw(_LINES))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(line)))
        what = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if what == "insert":
            line[at:at] = draw(_BYTES)
        elif what == "delete":
            del line[at : at + draw(st.integers(1, 4))]
        elif what == "replace":
            line[at : at + 1] = draw(_BYTES)
        else:  # a member twice: from a comma to the next
            start = line.find(b",", at)
            end = line.find(b",", start + 1)
            if 0 <= start < end:
                line[end:end] = line[start:end]
    return bytes(line)


@settings(max_examples=600)
@given(_LINES)
@example(usual_line("created", b"a/b.txt", 4096, 1796528569239596100, 7, 1, None, None, False))
@example(usual_line("deleted", b"a/b.txt", 0, 0, 7, 1, None, None, False))
@example(usual_line("modified", b"a/b.txt", 1, 9223372036854775807, 2**63 - 1, 2**63 - 1, [], "b", True))
def test_the_usual_line_is_read_as_the_full_decode_reads_it(line: bytes) -> None:
    assert decoded_or_error(line) == full_or_error(line)


_SMALL = b'{"v":1,"id":"%s","kind":"%s","source":"s","root":"/r","path":"%s","rel":"a","via":"scan"' + _HOP % 1


@settings(max_examples=1500)
@given(hostile())
@example(_SMALL % (b"a", b"created", b"/r/a"))
@example(_SMALL % (b"a", b"dropped", b"/r/a"))
@example(_SMALL % (b"a\\u0041", b"created", b"/r/a"))
@example(_SMALL % (b"a", b"created", b"/r/\x01"))
def test_a_hostile_line_is_taken_only_as_the_full_decode_takes_it(line: bytes) -> None:
    """Whatever the regular expression takes, the full decode takes with the same event; what it leaves, the full
    decode judges (the same event, or the same refusal)."""
    fast = E._usual(line)
    if fast is not None:
        assert exact(fast) == full_or_error(line)
    assert decoded_or_error(line) == full_or_error(line)


_PLAIN_LINES = st.builds(
    usual_line,
    st.sampled_from(E.KINDS),
    _PLAIN.filter(bool).map(lambda t: t.encode()),
    st.integers(0, 10**18 - 1),
    st.integers(10**18, 8 * 10**18),
    st.integers(0, 10**18 - 1),
    st.integers(0, 10**18 - 1),
    st.none() | st.lists(_PLAIN, max_size=3),
    st.none() | _PLAIN,
    st.booleans(),
)


@given(_PLAIN_LINES)
def test_the_usual_line_of_a_plain_name_takes_the_fast_path(line: bytes) -> None:
    """fc-watch's, fc-process's and fc-transport's lines of names without quotes, backslashes or control
    characters (any other character, non-ASCII included) are read by the regular expression."""
    fast = E._usual(line)
    assert fast is not None, line
    assert exact(fast) == exact(E._decode(line))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ((b'"v":1', b'"v":1.0'), "v a float"),
        ((b'"size":4096', b'"size":04096'), "a leading zero"),
        ((b'"size":4096', b'"size":4096.0'), "a float size"),
        ((b'"ino":7', b'"ino":7,"ino":8'), "a duplicate key"),
        ((b'"via":"scan"', b'"via":"scan","extra":1'), "a field more"),
        ((b'"rel":"a/b.txt"', b'"rel":"a/b\\u0000.txt"'), "an escape"),
        ((b'"rel":"a/b.txt"', b'"rel":"a/b\x7f\x01.txt"'), "a control character"),
        ((b'"rel":"a/b.txt"', b'"rel":"a/b\xff.txt"'), "not UTF-8"),
        ((b'"rel":"a/b.txt"', b'"rel":"a/b\xed\xa0\x80.txt"'), "an encoded surrogate"),
        ((b'"mtime_ns":"1796528569239596100"', b'"mtime_ns":"9999999999999999999"'), "mtime_ns past MAX_INT"),
        ((b'"seq":1}', b'"seq":1000000000000000000000}'), "a huge seq"),
        ((b'"mtime":1796528569.239596', b'"mtime":1e400'), "an infinite mtime"),
        ((b'"kind":"created"', b'"kind":"dropped"'), "a dropped line"),
        ((b"}}\n", b"}} \n"), "a space at the end"),
    ],
)
def test_an_unusual_line_is_decoded_in_full(change: tuple[bytes, bytes], why: str) -> None:
    line = usual_line("created", b"a/b.txt", 4096, 1796528569239596100, 7, 1, None, None, False)
    assert E._usual(line) is not None
    changed = line.replace(*change)
    assert changed != line, why
    assert E._usual(changed) is None, why
    assert decoded_or_error(changed) == full_or_error(changed)
