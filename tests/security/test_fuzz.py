"""Fuzz: generated bad lines between good ones, into every stage that reads events (the real commands).

Whatever comes in, a stage never exits 5, every good line gets through (its effect happens: the file on the
destination, the row in the database), its state file passes ``PRAGMA integrity_check``, and the stage starts
again on the same state file (exit 0 or 1).  ``make test`` runs a few examples with a fixed seed (seconds);
``make fuzz`` runs many (FC_FUZZ_EXAMPLES, default 200 per stage; FC_FUZZ_SEED picks another sequence).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.security.stage_runs import STAGES, Stage, integrity

EXAMPLES = int(os.environ.get("FC_FUZZ_EXAMPLES", "2"))
SEED = int(os.environ.get("FC_FUZZ_SEED", "16"))
LIMIT = 4096  # --max-line-bytes in these runs, so that "huge" lines cost little to make

# A valid event about a file that is not there and is no good line's: a mutation of it that happens to stay valid
# touches nothing the assertions look at.
BASE = {"v": 1, "id": "0" * 32, "kind": "created", "source": "s", "root": "/nonexistent", "path": "/nonexistent/x.txt"}
BASE.update(rel="x.txt", size=3, mtime=1.5, mtime_ns="1500000000", ino=7)
FIELDS = [*BASE, "hop", "name", "file", "server", "url", "remote", "error", "processed", "remote_size", "unknown"]

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=10
)


def dump(ev: object) -> bytes:
    # ensure_ascii: a lone surrogate is written as a \\udXXX escape, as json.dumps writes one
    return json.dumps(ev, ensure_ascii=True).encode()


@st.composite
def with_field(draw: st.DrawFn, values: st.SearchStrategy) -> bytes:
    ev = dict(BASE)
    ev[draw(st.sampled_from(FIELDS))] = draw(values)
    return dump(ev)


@st.composite
def surrogate_somewhere(draw: st.DrawFn) -> bytes:
    ev = dict(BASE)
    field = draw(st.sampled_from(FIELDS))
    text = draw(st.text(max_size=5)) + draw(surrogates) + draw(st.text(max_size=5))
    where = draw(st.sampled_from(["value", "key", "hop", "nested"]))
    if where == "value":
        ev[field] = text
    elif where == "key":
        ev[text] = 1
    elif where == "hop":
        ev["hop"] = {
            "from": "/nonexistent.db",
            "epoch": "e",
            "seq": 1,
            draw(st.sampled_from(["from", "epoch", "x"])): text,
        }
    else:
        ev["unknown"] = {"a": [1, {"b": text}]}
    return dump(ev)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(33, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return dump(BASE)[:-1] + b',"unknown":' + (opener * depth + "0" + closer * depth).encode() + b"}"


@st.composite
def giant_int(draw: st.DrawFn) -> bytes:
    n = draw(st.one_of(st.integers(2**63, 2**400), st.integers(-(2**200), -1)))
    field = draw(st.sampled_from(["size", "ino", "remote_size", "mtime_ns", "hop", "v", "mtime"]))
    ev = dict(BASE)
    if field == "hop":
        ev["hop"] = {"from": "/nonexistent.db", "epoch": "e", "seq": n}
    elif field == "mtime_ns":
        ev[field] = str(n)
    else:
        ev[field] = n
    return dump(ev)


@st.composite
def bad_hop(draw: st.DrawFn) -> bytes:
    hop = {"from": "/nonexistent.db", "epoch": "e", "seq": 1}
    hop[draw(st.sampled_from(["from", "epoch", "seq", "for"]))] = draw(json_values)
    if draw(st.booleans()):
        del hop[draw(st.sampled_from(["from", "epoch", "seq"]))]
    return dump({**BASE, "hop": draw(st.one_of(st.just(hop), json_values))})


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    line = dump({**BASE, "unknown": draw(json_values)})
    return line[: draw(st.integers(1, len(line) - 1))]


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(LIMIT, 4 * LIMIT))
    return dump({**BASE, "unknown": "x" * n})


no_newline = st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b" "))
bad_line = st.one_of(
    truncated(),
    no_newline,  # binary garbage
    no_newline.map(lambda b: dump(BASE)[:20] + b"\0" + b),  # a NUL
    huge(),
    with_field(json_values).map(lambda line: line),  # a field of any type, known or not
    st.builds(lambda v: dump({**BASE, "v": v}), json_values),  # wrong v
    st.builds(lambda k: dump({**BASE, "kind": k}), json_values),
    surrogate_somewhere(),
    deep(),
    giant_int(),
    bad_hop(),
    json_values.map(dump),  # not an object, or an object that is no event
    st.sampled_from([b"", b" ", b"{}", b"[]", b"null", b'{"v":1}', b"NaN", b'{"v":1,"kind":"created","path":NaN}']),
)


def _check(stage: Stage, bad: list[bytes]) -> None:
    d = Path(tempfile.mkdtemp(prefix="fc-fuzz-"))
    try:
        lines = [stage.good(d, 0)]
        for i, line in enumerate(bad, 1):
            lines += [line + b"\n", stage.good(d, i)]
        p = stage.run(d, b"".join(lines), "--max-line-bytes", str(LIMIT))
        err = p.stderr.decode(errors="replace")
        assert p.returncode in (0, 1), f"exit {p.returncode}:\n{err[-3000:]}"
        assert "Traceback" not in err, err[-3000:]
        assert stage.good_seen(d, p.stdout) == {f"good {i}.txt" for i in range(len(bad) + 1)}, err[-3000:]
        if stage.stateful:
            assert integrity(stage.state(d)) == "ok"
            again = stage.run(d, b"", "--max-line-bytes", str(LIMIT))
            assert again.returncode in (0, 1), again.stderr.decode(errors="replace")[-3000:]
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_bad_lines_never_crash_a_stage_nor_lose_a_good_line(stage: Stage) -> None:
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(bad_line, min_size=5, max_size=25))
    def fuzz(bad: list[bytes]) -> None:
        _check(stage, bad)

    fuzz()
