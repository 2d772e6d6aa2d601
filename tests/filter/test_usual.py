"""fc-filter reads fc-watch's usual line without the JSON parser (events.usual_head, issue 18): whatever it
matches, events.decode takes with the same values; every other line is decoded and checked as before."""

from __future__ import annotations

import json

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from fileconveyor import events as E
from fileconveyor.cli.filter import main
from fileconveyor.errors import Exit
from tests.conftest import call


@pytest.fixture(autouse=True)
def _state(state_dir: object) -> None:
    pass


def watch_line(kind: str, rel: bytes, size: int = 4096, mtime_ns: int = 1796528569239596100, ino: int = 7) -> bytes:
    """A line as fc-watch writes it (its encoder, then its hop)."""
    line = E.FileEventEncoder("src", b"/srv/www", "scan")(kind, rel, size, mtime_ns, ino)
    return line[:-2] + b',"hop":{"from":"/s/watch.db","epoch":"ab12","seq":%d}}\n' % (ino + 1)


def test_fc_watchs_lines_are_read_without_the_json_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding and checking each line was three quarters of fc-filter's CPU per line; fc-watch's lines of plain
    names are matched instead, and decided as before."""
    decoded: list[bytes] = []
    real = E.decode

    def decode(line: bytes) -> dict:
        decoded.append(line)
        return real(line)

    monkeypatch.setattr(E, "decode", decode)
    lines = [watch_line("created", b"a/b.css", ino=1), watch_line("modified", b"a/c.txt", ino=2)]
    lines += [watch_line("deleted", b"d.css", ino=3), watch_line("created", "é.css".encode(), ino=4)]
    r = call(main, ["--extensions", "css"], b"".join(lines))
    assert r.status == Exit.OK, r.stderr
    # (a read ending with a dropped line is followed by its mark: test_pass_through.py)
    mark = b'{"v":1,"kind":"dropped","hop":{"from":"/s/watch.db","epoch":"ab12","seq":3}}\n'
    assert r.stdout == lines[0] + mark + lines[2] + lines[3]
    assert decoded == [lines[3]]  # (a name that is not ASCII: decoded)


def test_a_bad_line_of_the_usual_look_is_still_reported_with_its_number() -> None:
    good = watch_line("created", b"a.css", ino=1)
    too_late = watch_line("created", b"b.css", mtime_ns=E.MAX_INT + 1, ino=2)  # 19 digits, past what SQLite holds
    zero = watch_line("created", b"c.css", ino=3).replace(b'"size":4096', b'"size":04096')  # not JSON
    r = call(main, ["--extensions", "css"], good + too_late + zero)
    assert r.status == Exit.EVENTS_FAILED
    assert r.stdout == good
    assert "input line 2: field 'mtime_ns' is not an integer" in r.stderr
    assert "input line 3: not valid JSON" in r.stderr


_PLAIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)  # quotes, backslashes too
_ANY = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["é.css", "\x7f", "\n"])
_TEXT = st.one_of(_PLAIN, st.sampled_from(["a b.css", "d/x.bin", ""]), _ANY)
_NUM = st.integers(0, 10**6) | st.integers(0, 2**64) | st.sampled_from([0, 9, 10**17, 10**18, E.MAX_INT, E.MAX_INT + 1])


# mostly what fc-watch writes (names without quotes or backslashes, numbers below MAX_INT), sometimes not
_SAFE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7F, exclude_characters='"\\'), max_size=10)
_NAME = st.integers(0, 9).flatmap(lambda n: _TEXT if n == 0 else _SAFE)
_SMALL = st.integers(0, 9).flatmap(lambda n: _NUM if n == 0 else st.integers(0, 10**6))


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    """A line of fc-watch's encoder, with a hop: any name, any number (some past what decode takes)."""
    encode = E.FileEventEncoder(draw(_NAME), draw(_NAME).encode(), draw(_NAME))
    kind = draw(st.sampled_from(E.KINDS))
    ns = draw(st.integers(0, 2 * 10**18) | st.integers(0, 2**64) | st.sampled_from([E.MAX_INT, E.MAX_INT + 1]))
    line = encode(kind, draw(_NAME).encode(), draw(_SMALL), ns, draw(_SMALL))
    hop = {"from": draw(_NAME), "epoch": draw(_NAME), "seq": draw(_SMALL)}
    return line[:-2] + b',"hop":' + json.dumps(hop, separators=(",", ":")).encode() + b"}\n"


@st.composite
def other(draw: st.DrawFn) -> bytes:
    """An event line near fc-watch's shape: any text, any number, a field missing or added."""
    kind = draw(st.sampled_from(["created", "modified", "deleted", "created", "dropped"]))
    ev: dict = {"v": draw(st.sampled_from([1, 1, 1, 2])), "id": draw(_TEXT), "kind": kind}
    for field in ("source", "root", "path", "rel"):
        ev[field] = draw(_TEXT)
    if (kind != "deleted") != (draw(st.integers(0, 7)) == 0):  # (fc-watch's, mostly)
        ev["size"] = draw(_NUM)
        ev["mtime"] = draw(st.floats(0, 2e9) | st.floats(0, 1e17) | st.integers(0, 10**17))
        ns = st.integers(0, 2 * 10**18) | st.integers(0, 2**64)
        ev["mtime_ns"] = draw(ns.map(str) | st.sampled_from(["", "0012", "-1", "1e3"]))
        ev["ino"] = draw(_NUM)
    ev["via"] = draw(_TEXT)
    if draw(st.integers(0, 3)):
        ev["hop"] = {"from": draw(_TEXT), "epoch": draw(_TEXT), "seq": draw(_NUM)}
    return json.dumps(ev, separators=(",", ":"), ensure_ascii=draw(st.booleans())).encode() + b"\n"


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    line = draw(st.one_of(encoded(), encoded(), encoded(), other()))
    if draw(st.integers(0, 3)) == 0:  # a byte changed: a bad line, or another good one
        at = draw(st.integers(0, len(line) - 1))
        line = line[:at] + bytes([draw(st.integers(0, 255))]) + line[at + 1 :]
    return line


@settings(max_examples=300, deadline=None)
@given(lines())
@example(watch_line("created", b"a b/c.css"))
@example(watch_line("deleted", b"x"))
def test_what_is_matched_is_what_decode_takes(line: bytes) -> None:
    seen = E.usual_head(line)
    event("matched" if seen is not None else "not matched")
    if seen is None:
        return
    ev, hop = seen
    full = E.decode(line)  # raises for a line decode refuses: the test fails
    assert {k: full[k] for k in ev} == ev and set(ev) == {"kind", "root", "path", "rel"} | ({"size"} & set(full))
    assert full["hop"] == hop and list(full["hop"]) == ["from", "epoch", "seq"]
    assert ("size" in ev) == (full["kind"] != "deleted")


def test_fc_watchs_own_lines_are_matched() -> None:
    for kind in E.KINDS:
        for rel in (b"a.css", b"d/a b.css", b"x", b"~!#$%&'()*+,-.;<=>?@[]^_`{|}"):
            assert E.usual_head(watch_line(kind, rel)) is not None, (kind, rel)


@pytest.mark.parametrize(
    "args",
    [
        ["--extensions", "css:tar.gz"],
        ["--extensions", "CSS", "--case-sensitive"],
        ["--paths", "img:a/b"],
        ["--paths", "/srv/www/img"],
        ["--ignore-dirs", "CVS:.svn"],
        ["--pattern", r".*/a[^/]*\.css$"],
        ["--min-size", "100", "--max-size", "1k"],
        ["--extensions", "css", "--invert"],
    ],
)
def test_every_condition_decides_a_matched_line_as_a_decoded_one(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rels = [b"a.css", b"img/b.CSS", b"a/b/c.tar.gz", b"CVS/a.css", b"x/.svn/y.css", b"img2/a.css", b".css", b"a b.txt"]
    lines = [watch_line(kind, rel, size=50 + 300 * i, ino=10 * i + k) for i, rel in enumerate(rels)
             for k, kind in enumerate(E.KINDS)]  # fmt: skip
    assert all(E.usual_head(line) is not None for line in lines)
    fast = call(main, args, b"".join(lines))
    monkeypatch.setattr("fileconveyor.stages.filter.run.usual_head", lambda line: None)
    decoded = call(main, args, b"".join(lines))
    assert fast.status == decoded.status == Exit.OK, fast.stderr + decoded.stderr
    assert fast.stdout == decoded.stdout and fast.stderr == decoded.stderr
    kept = [line for line in fast.stdout.splitlines() if b'"kind":"dropped"' not in line]
    assert 0 < len(kept) < len(lines)  # (some lines dropped, some passed)
