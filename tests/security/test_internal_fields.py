"""``_fc_transport_only`` is fc-transport's own mark on an event its ``--retry-failed`` replays (the one server the
transfer failed on), but it was read from any line of its input: a stage before it may write anything, and unknown
fields pass through every stage.  A line carrying it was sent to that one server only, and one naming a server no
``--to`` gives was sent nowhere and left no line on the output (fc-record never heard of it); a value that is no
string made the line a bad line.  Now only fc-transport's own replays are taken so (a tag of the process); an input
line's field is ignored and dropped.  Real fc-transport (the command) to two real local folders."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.transport.conftest import env, event, jsonl, lines, transport, tree  # noqa: F401 - fixture

ONLY = "_fc_transport_only"


def test_an_input_line_cannot_choose_the_servers(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    marks: dict[str, object] = {"one.css": "b", "none.css": "nowhere", "odd.css": ["b"], "plain.css": None}
    evs = []
    for rel, mark in marks.items():
        (src / rel).write_text(rel)
        evs.append(event(src, rel) if mark is None else event(src, rel, **{ONLY: mark}))
    to = ["--to", f"file://{tmp_path / 'a'}?name=a", "--to", f"file://{tmp_path / 'b'}?name=b"]
    res = transport([*to, "--state", str(tmp_path / "t.db"), "--drain-timeout", "5"], env, jsonl(evs))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    want = {rel: rel.encode() for rel in marks}
    assert (tree(tmp_path / "a"), tree(tmp_path / "b")) == (want, want)
    outs = lines(res.stdout)
    assert sorted((o["rel"], o["server"]) for o in outs) == sorted((r, s) for r in marks for s in "ab"), outs
    assert not any(ONLY in o for o in outs), outs


def test_retry_failed_still_sends_to_the_failed_server_only(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.css").write_text("x")
    # b fails for this file: a directory where it goes (a root that is a file is refused at start now, exit 3)
    (tmp_path / "b" / "x.css" / "sub").mkdir(parents=True)
    to = ["--to", f"file://{tmp_path / 'a'}?name=a", "--to", f"file://{tmp_path / 'b'}?name=b"]
    state = ["--state", str(tmp_path / "t.db"), "--drain-timeout", "5"]
    first = transport([*to, *state], env, jsonl([event(src, "x.css")]))
    assert tree(tmp_path / "a") == {"x.css": b"x"}, first.stderr.decode(errors="replace")
    with sqlite3.connect(tmp_path / "t.db") as db:
        assert [r[0] for r in db.execute("SELECT server FROM failed")] == ["b"]
    shutil.rmtree(tmp_path / "b" / "x.css")
    (tmp_path / "a" / "x.css").unlink()  # a replay to a as well would bring it back
    again = transport([*to, *state, "--retry-failed"], env, b"")
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    assert (tree(tmp_path / "a"), tree(tmp_path / "b")) == ({}, {"x.css": b"x"})
    (out,) = lines(again.stdout)
    assert out["server"] == "b" and ONLY not in out, out
