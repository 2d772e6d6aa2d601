"""fc-tee's last line of each writer (stages/tee/writers.py): found at one decode per write as a rule, the same as
decoding every line whatever the lines (Hypothesis), and bounded so that the real writer, whose ``hop.from`` is its
state file, survives any number of made-up ones (state files made by real fc-watch runs)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fileconveyor import events as E
from fileconveyor.stages.tee import writers
from fileconveyor.stages.tee.writers import MAX_WRITERS, LastLines, last_per_writer
from tests.stages.tee_rig import BIN

ORIGINS = ["/s/w.db", '/s/"hop".db', '/s/é\\"from".db']  # few: lines of one writer must meet
EPOCHS = ["e1", "e2"]


def reference(data: bytes) -> list[tuple[tuple[str, str], bytes]]:
    """Every line decoded: the last line of each writer, in the order of those lines."""
    found: dict[tuple[str, str], tuple[int, bytes]] = {}
    for pos, line in enumerate(re.findall(rb"[^\n]*\n", data)):
        try:
            hop = E.decode(line).get("hop")
        except E.EventError:
            continue
        if hop is not None:
            found[(hop["from"], hop["epoch"])] = (pos, line)
    return [(w, line) for w, (_, line) in sorted(found.items(), key=lambda kv: kv[1][0])]


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_BODY = '"v":1,"id":"i","kind":"created","source":"s","root":"/r","path":"/r/a","rel":"a","via":"scan"'


_SHAPES = range(21)  # how many _line makes


def _line(shape: int, o: str, e: str, o2: str, e2: str, n: int) -> bytes:
    hop = f'{{"from":{o},"epoch":{e},"seq":{n}}}'
    other = f'{{"from":{o2},"epoch":{e2},"seq":{n}}}'
    shapes = [
        f'{{{_BODY},"hop":{hop}}}',  # as our writers write it
        f'{{{_BODY},"hop":{{"from":{o},"epoch":{e},"seq":{n},"for":["t"]}}}}',  # a replay's
        f'{{{_BODY},"hop":{hop},"x":{{"hop":{other}}}}}',  # another writer's hop nested after its own
        f'{{{_BODY},"x":{{"hop":{other}}},"hop":{hop}}}',  # ... and before
        f'{{{_BODY},"hop":{hop},"n":1}}',  # the hop not last
        f'{{{_BODY},"h\\u006fp":{hop}}}',  # its key spelled with an escape
        f'{{{_BODY},"hop" :{hop}}}',  # a space before the colon
        f'{{{_BODY},"hop":{{"from":{o},"epoch":{e},"seq":{n},"from":{o2}}}}}',  # from given twice
        f'{{{_BODY},"hop":{{"from":{o},"epoch":{e},"seq":{n},"epoch":{e2}}}}}',  # epoch given twice
        f'{{{_BODY},"hop":{other},"hop":{hop}}}',  # the hop given twice
        f'{{{_BODY},"hop":null}}',
        f"{{{_BODY}}}",  # no hop
        '{"v":1,"kind":"resend"}',
        f'{{{_BODY},"hop":{hop}',  # cut short
        f'{{{_BODY},"hop":{{"from":{o},"epoch":{e},"seq":0{n}}}}}',  # a seq JSON does not allow
        "not json",
        f'{{{_BODY},"\\u0068op":{{"fr\\u006fm":{o},"\\u0065poch":{e},"seq":{n}}}}}',  # every key of it so
        f'{{{_BODY},"hop":{other},"n":{{"q":1,"hop":{hop}}},"o":{{"x":1,"seq":{n}}}}}',  # its end: a hop not its own
        f'{{{_BODY},"n":{{"q":1,"hop":{hop}}},"o":{{"x":1,"seq":{n}}}}}',  # ... nor any hop
        f'{{{_BODY},"hop":{hop},"o":{{"x":1,"seq":{n}}}}}',  # ... its hop, not last
        f'{{{_BODY},"hop":{{"from":{o},"epoch":{e},"x":{{"seq":1}},"seq":{n}}}}}',  # an object in its hop
    ]
    return (shapes[shape] + "\n").encode()


WRITERS = [(o, e) for o in ORIGINS for e in EPOCHS]


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """Lines of one writer mostly (as fc-tee reads them), with hostile ones among them that name that writer too:
    what a fast path could take for that writer's lines meets that writer's own."""
    writer = draw(st.sampled_from(WRITERS))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        shape = draw(st.sampled_from([0, 0, *range(21)]))
        (o, e), (o2, e2) = draw(st.sampled_from([writer, writer, writer, *WRITERS])), draw(st.sampled_from(WRITERS))
        out.append(_line(shape, _s(o), _s(e), _s(o2), _s(e2), draw(st.integers(0, 3))))
    if draw(st.booleans()):  # its line last, as our writers write it
        out.append(_line(0, _s(writer[0]), _s(writer[1]), "", "", draw(st.integers(0, 3))))
    return b"".join(out)


@settings(max_examples=3000, deadline=None)
@given(batches())
def test_the_last_line_of_each_writer_is_what_decoding_every_line_gives(data: bytes) -> None:
    assert last_per_writer(data) == reference(data)


def test_every_pair_of_shapes_gives_what_decoding_every_line_gives() -> None:
    """Each hostile shape before each other, naming the writer of the last line or another, its last line or not
    after them: all of it, not what Hypothesis happens to draw."""
    w, x = ("/s/w.db", "e1"), ("/s/x.db", "e2")  # (no quote in them: a backslash takes the slow way at once)
    names = [(w, w), (w, x), (w, ("/s/w.db", "e2")), (x, w)]  # (this writer, the other one in its line)
    count = len(_SHAPES)
    for first, second in itertools.product(range(count), repeat=2):
        for (a, b), (c, d) in itertools.product(names, repeat=2):
            pair = _line(first, _s(a[0]), _s(a[1]), _s(b[0]), _s(b[1]), 1) + _line(
                second, _s(c[0]), _s(c[1]), _s(d[0]), _s(d[1]), 1
            )
            for data in (pair, pair + _line(0, _s(w[0]), _s(w[1]), "", "", 3)):
                assert last_per_writer(data) == reference(data), data


def test_a_write_of_one_writer_costs_one_decode(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    hop = '{"from":"/s/w.db","epoch":"e1","seq":%d}'
    data = "".join(f'{{{_BODY},"hop":{hop % i}}}\n' for i in range(1000)).encode() + b"not json\n"
    calls = []
    decode = E.decode
    monkeypatch.setattr(E, "decode", lambda line: calls.append(line) or decode(line))
    assert last_per_writer(data) == [(("/s/w.db", "e1"), f'{{{_BODY},"hop":{hop % 999}}}\n'.encode())]
    assert len(calls) == 2  # the bad last line, then the last line with a hop


def _real_writer(tmp_path: Path, name: str) -> bytes:
    """The last line of a real fc-watch run (its state file ``name``.db, its epoch)."""
    site = tmp_path / f"site-{name}"
    site.mkdir()
    (site / "x.txt").write_text("x")
    watch = [sys.executable, str(BIN / "fc-watch"), "--scan-once", "--state", str(tmp_path / f"{name}.db"), str(site)]
    return subprocess.run(watch, check=True, capture_output=True).stdout.splitlines(keepends=True)[-1]


def _made_up(origin: str, epoch: str = "0123") -> bytes:
    return f'{{{_BODY},"hop":{{"from":{_s(origin)},"epoch":{_s(epoch)},"seq":7}}}}\n'.encode()


def test_the_real_writer_survives_a_flood_of_made_up_ones(tmp_path: Path) -> None:
    real = _real_writer(tmp_path, "watch")
    origin = json.loads(real)["hop"]["from"]
    kept = LastLines()
    kept.note(real)
    (tmp_path / "plain.txt").write_text("not a database")
    for i in range(0, 10_000, 100):
        kept.note(b"".join(_made_up(str(tmp_path / f"nowhere{j}.db")) for j in range(i, i + 100)))
        kept.note(_made_up(str(tmp_path / "plain.txt")) + _made_up(str(tmp_path), f"{i}"))
        kept.note(b"".join(_made_up(origin, f"{j}") for j in range(i, i + 20)))  # the real file, made-up epochs
        assert len(kept) <= MAX_WRITERS
    assert real in kept.lines()
    assert len(kept) == MAX_WRITERS


def test_when_every_writer_kept_is_real_the_least_recent_goes(tmp_path: Path) -> None:
    a, b, c = (_real_writer(tmp_path, n) for n in "abc")
    kept = LastLines(max_writers=2)
    for line in (a, b, a, c):
        kept.note(line)
    assert kept.lines() == [a, c]
    kept.note(_made_up("/nowhere.db"))
    assert kept.lines() == [a, c]


def test_a_long_line_is_not_kept(tmp_path: Path) -> None:
    kept = LastLines()
    short = _made_up("/w.db")
    kept.note(short)
    kept.note(f'{{{_BODY},"x":"{"y" * writers.MAX_LINE}","hop":{{"from":"/w.db","epoch":"0123","seq":8}}}}\n'.encode())
    assert kept.lines() == [short]
