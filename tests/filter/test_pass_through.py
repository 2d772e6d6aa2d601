"""fc-filter as a pass-through stage: lines go on byte for byte (hop included), no state file is made, and a
state file of the durable fc-filter of earlier versions that still holds lines is run the old way once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.cli.filter import main
from fileconveyor.delivery.durable import outbox_lines
from fileconveyor.errors import Exit
from tests.conftest import RELAY, ROOT, call
from tests.filter.test_filter import ev
from tests.relay import main as relay


@pytest.fixture(autouse=True)
def _state(state_dir: Path) -> None:
    pass


def hopped(e: dict, seq: int, origin: str = "/nowhere/watch.db") -> bytes:
    """A line as fc-watch writes it: its own key order, a hop at the end."""
    return E.encode(e)[:-2] + b',"hop":{"from":"' + origin.encode() + b'","epoch":"ab12","seq":%d}}\n' % seq


def test_passed_lines_are_the_lines_that_came_byte_for_byte_and_no_state_is_made(state_dir: Path) -> None:
    """Spacing, key order, unknown fields and the writer's hop are kept: the reader after us acknowledges to the
    writer before us (docs/durability.md, "Pass-through stages")."""
    odd = b'{"kind": "created",  "v":1, "rel":"b.css", "path":"/srv/www/b.css", "x-mine": [1, {"a": null}]}\n'
    lines = [hopped(ev("a.css"), 7), hopped(ev("a.txt"), 8), odd, hopped(ev("c.css"), 9)]
    r = call(main, ["--extensions", "css"], b"".join(lines))
    assert r.status == Exit.OK, r.stderr
    # no hop of our own, no re-encoding; a test's stream is read a line at a time, and a read that ends with a
    # dropped line is followed by the mark of it
    assert r.stdout == lines[0] + mark(8) + odd + lines[3]
    assert not state_dir.exists() or not list(state_dir.iterdir())  # no state file, no lock


def mark(seq: int, origin: str = "/nowhere/watch.db") -> bytes:
    return b'{"v":1,"kind":"dropped","hop":{"from":"%s","epoch":"ab12","seq":%d}}\n' % (origin.encode(), seq)


def test_a_writers_last_lines_dropped_are_marked_so_its_reader_acknowledges_them(tmp_path: Path) -> None:
    """``stage | fc-filter | stage`` whose last line is dropped: the reader acknowledges the writer up to it (a
    ``dropped`` line), and the writer ends at once with 0.  Without the mark its reader acknowledged only up to
    the last line it got; the writer waited for the rest, then exited 141 and re-sent it on every run (and
    fc-consume held such messages unacknowledged)."""
    lines = [E.encode(ev(f"a{i}.css")) for i in range(3)] + [E.encode(ev("z.txt"))]
    relay_argv = [sys.executable, str(RELAY), "--drain-timeout", "20"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    writer = subprocess.Popen([*relay_argv, "--state", str(tmp_path / "w.db")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    filt = subprocess.Popen([sys.executable, str(ROOT / "bin" / "fc-filter"), "--extensions", "css"],
                            stdin=writer.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    reader = subprocess.Popen([*relay_argv, "--state", str(tmp_path / "r.db")], stdin=filt.stdout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    writer.stdout.close()  # type: ignore[union-attr]
    filt.stdout.close()  # type: ignore[union-attr]
    _, werr = writer.communicate(b"".join(lines), timeout=60)
    out, rerr = reader.communicate(timeout=60)
    filt.wait(timeout=60)
    assert writer.returncode == 0, werr
    assert reader.returncode == 0 and filt.returncode == 0, rerr
    assert [json.loads(x)["rel"] for x in out.splitlines()] == ["a0.css", "a1.css", "a2.css"]
    with sqlite3.connect(tmp_path / "w.db") as db:
        assert db.execute("SELECT seq FROM acks").fetchall() == [(4,)]


def test_bad_lines_are_numbered_and_skipped_the_rest_passes() -> None:
    lines = [hopped(ev("a.css"), 1), b"not json\n", b"\n", hopped(ev("b.css"), 3), b'{"v":1,"kind":"created"']
    r = call(main, ["--extensions", "css"], b"".join(lines))
    assert r.status == Exit.EVENTS_FAILED
    assert r.stdout == lines[0] + lines[3]
    assert "input line 2: " in r.stderr and "not json" in r.stderr
    assert "incomplete last line" in r.stderr


def test_status_says_there_is_no_queue(state_dir: Path) -> None:
    r = call(main, ["--extensions", "css", "--status"], b"")
    assert r.status == Exit.OK, r.stderr
    assert "passes lines through and keeps no queue" in r.stdout.decode()
    assert not state_dir.exists() or not list(state_dir.iterdir())


def old_state(state: Path, lines: list[bytes]) -> None:
    """What the durable fc-filter of an earlier version left: ``lines`` taken into its outbox and written, no
    reader having acknowledged them yet (it was killed)."""
    r = call(relay, ["--extensions", "css", "--state", str(state)], b"".join(lines))
    assert r.status == Exit.OK, r.stderr
    with sqlite3.connect(state) as db:
        assert outbox_lines(db) == sum(b".css" in x for x in lines)
        db.execute("UPDATE meta SET v=0 WHERE k='written'")  # killed before it recorded them as written


def test_an_old_state_file_holding_lines_is_run_the_old_way_once(tmp_path: Path) -> None:
    """Upgrading with lines in the old fc-filter's outbox that no reader took: they are written again (with the
    old file's hop, so its reader drops what it had), with a warning; the run after passes lines through."""
    state = tmp_path / "filter.db"
    old_state(state, [hopped(ev("a.css"), 1), hopped(ev("b.txt"), 2), hopped(ev("c.css"), 3)])
    r = call(main, ["--extensions", "css", "--state", str(state)], hopped(ev("d.css"), 4))
    assert r.status == Exit.OK, r.stderr
    assert "holds 2 line(s) not yet taken by its reader" in r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [E.get_path(e, "rel") for e in out] == [b"a.css", b"c.css", b"d.css"]
    assert {e["hop"]["from"] for e in out} == {str(state)}  # written by the old runner, its outbox replayed
    before = state.stat().st_mtime_ns
    again = call(main, ["--extensions", "css", "--state", str(state)], hopped(ev("e.css"), 5))
    assert again.status == Exit.OK, again.stderr
    assert again.stdout == hopped(ev("e.css"), 5)  # nothing left there: passed through
    assert "earlier fc-filter" not in again.stderr
    assert state.stat().st_mtime_ns == before
    status = call(main, ["--extensions", "css", "--state", str(state), "--status"], b"")
    assert status.status == Exit.OK and "0 queued" in status.stdout.decode(), status.stdout + status.stderr.encode()
    assert "keeps no queue" in status.stdout.decode()


def test_an_old_state_file_whose_lines_were_all_taken_is_not_used(tmp_path: Path) -> None:
    state = tmp_path / "filter.db"
    r = call(relay, ["--extensions", "css", "--state", str(state)], hopped(ev("a.css"), 1))
    assert r.status == Exit.OK, r.stderr  # written to a stream no File Conveyor stage reads: delivered
    p = call(main, ["--extensions", "css", "--state", str(state)], hopped(ev("b.css"), 2))
    assert p.status == Exit.OK and p.stdout == hopped(ev("b.css"), 2), p.stderr
    assert "earlier fc-filter" not in p.stderr


def test_a_resend_line_passes_on_and_none_of_our_own_goes_to_stdout() -> None:
    """A resend line (a pass-through before us started: events.RESEND) goes on unchanged, whatever the filter,
    for the File Conveyor reader after us; into stdout fc-filter writes none of its own (only into a named FIFO,
    whose reader may not see its input end: tests/durability/test_pass_through_replaced_unseen.py)."""
    lines = [hopped(ev("a.txt"), 1), E.RESEND_LINE, hopped(ev("b.css"), 2)]
    r = call(main, ["--extensions", "css"], b"".join(lines))
    assert r.status == Exit.OK, r.stderr
    assert r.stdout == mark(1) + E.RESEND_LINE + lines[2]  # (a.txt's dropped mark: a read at a time here)
