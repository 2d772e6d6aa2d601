"""A reader that registered and never comes back no longer haunts its writer (docs/durability.md, "A reader that
never comes back"; delivery/acks_admin.py).

The reader of these tests is the one a new user met: an fc-transport tried once against a destination that never
answered (here a port bound and never listened on: connection refused at once), exit 4, its lines held in its state
file, never run again and its state file deleted.  Before, every later `fc-watch --scan-once SITE | cat` showed
those lines again (`"via":"replay"`), for 7 days, as long as fc-watch kept that reader's acknowledgement.  Real
processes, pipes and state files throughout."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT, write_tree

BIN = ROOT / "bin"
FILES = {f"css/f{i}.css": f"a{{b:{i}}}\n" for i in range(5)}
DEADLINE = 90.0  # seconds for what a loaded machine does in one


def _cmd(name: str, *args: str | Path) -> str:
    exe = RELAY if name == "fc-relay" else BIN / name
    return " ".join(shlex.quote(str(a)) for a in [sys.executable, exe, *args])


def _sh(*stages: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FC_PASSWORD": "pw"}
    res = subprocess.run(
        ["bash", "-c", "set -o pipefail; " + " | ".join(stages)], capture_output=True, text=True, timeout=180, env=env
    )
    assert "Traceback" not in res.stderr, res.stderr
    if check is not None:
        assert res.returncode == check, res.stderr
    return res


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A TCP port bound and never listened on: a connection there is refused at once, and nobody else binds it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _site(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "site", FILES)


def _watch(tmp_path: Path, *more: str) -> str:
    return _cmd("fc-watch", "--scan-once", "--state", tmp_path / "w.db", *more, tmp_path / "site")


def _ghost(tmp_path: Path, port: int, name: str = "t.db", *middle: str, keep: bool = False) -> Path:
    """Run the pipeline once against the destination that never answers (exit 4: its lines wait in its state
    file), then delete that fc-transport's state file (unless ``keep``), as a user would who gave up on it."""
    state = tmp_path / name
    transport = _cmd(
        "fc-transport", "-q", "--state", state, "--to", f"ftp://u@127.0.0.1:{port}/x", "--drain-timeout", "2"
    )
    _sh(_watch(tmp_path), *middle, transport, check=4)
    if not keep:
        _delete(state)
    return state


def _delete(state: Path) -> None:
    for p in state.parent.glob(state.name + "*"):
        p.unlink()


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _acks(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT reader, seq FROM acks"))
    finally:
        conn.close()


def _readers(tmp_path: Path) -> str:
    return _sh(_cmd("fc-watch", "--state", tmp_path / "w.db", "--readers")).stdout


def test_a_vanished_reader_is_forgotten_and_a_later_look_gets_no_old_lines(tmp_path: Path, refused_port: int) -> None:
    site = _site(tmp_path)
    ghost = _ghost(tmp_path, refused_port, keep=True)
    # what a user saw: every look shows the vanished reader's lines again
    look = _sh(_watch(tmp_path), "cat")
    assert sorted(ev["rel"] for ev in _lines(look.stdout)) == sorted(FILES)
    assert "--forget-reader" not in look.stderr, "its state file is there: it may run again (its destination back)"
    _delete(ghost)
    look = _sh(_watch(tmp_path), "cat")
    seen = _lines(look.stdout)
    assert sorted(ev["rel"] for ev in seen) == sorted(FILES)
    assert {ev["via"] for ev in seen} == {"replay"}
    # its state file gone: the look says so, and how to end it
    said = [line for line in look.stderr.splitlines() if "--forget-reader" in line]
    assert len(said) == 1 and f"re-sent 5 line(s) kept for reader {ghost}, whose state file is gone" in said[0]
    shown = _readers(tmp_path)
    assert str(ghost) in shown and "state file gone" in shown and "5 line(s) after it" in shown, shown
    command = said[0].split("if it will not run again: fc-watch ", 1)[1]
    done = _sh(_cmd("fc-watch") + " " + command)  # the command as the warning gives it
    assert f"forgot reader {ghost}" in done.stdout
    assert _acks(tmp_path / "w.db") == {}
    assert "no File Conveyor reader" in _readers(tmp_path)
    assert _sh(_watch(tmp_path), "cat").stdout == "", "nothing old is re-sent once the reader is forgotten"
    (site / "new.css").write_text("n{}\n")
    seen = _lines(_sh(_watch(tmp_path), "cat").stdout)
    assert [(ev["rel"], ev["kind"], ev["via"]) for ev in seen] == [("new.css", "created", "scan")]


def test_a_reader_not_known_is_refused_and_nothing_is_forgotten(tmp_path: Path, refused_port: int) -> None:
    _site(tmp_path)
    ghost = _ghost(tmp_path, refused_port)
    res = _sh(_cmd("fc-watch", "--state", tmp_path / "w.db", "--forget-reader", tmp_path / "other.db"), check=2)
    assert "is not a reader known to" in res.stderr and str(ghost) in res.stderr, res.stderr
    assert list(_acks(tmp_path / "w.db")) == [str(ghost)]
    # relative to the current directory, as a user types it: the same reader
    res = subprocess.run(
        [sys.executable, BIN / "fc-watch", "--state", "w.db", "--forget-reader", "t.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert _acks(tmp_path / "w.db") == {}


def _wait(what: str, cond: object) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"not within {DEADLINE} s: {what}"
        time.sleep(0.05)


def _files(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in d.rglob("*") if p.is_file()} if d.exists() else {}


def test_a_running_reader_is_not_forgotten_and_kill_9_of_fc_watch_loses_nothing(
    tmp_path: Path, refused_port: int
) -> None:
    """While fc-watch runs live into an fc-transport: forgetting that running reader is refused (it would register
    again with its next acknowledgement, and fc-watch meanwhile drop deletions it has not acknowledged); forgetting
    the vanished one is done under the running fc-watch, which is then killed with -9 while files change; the
    run after it brings the destination to exactly the tree, deletions included, and then nothing is re-sent."""
    site = _site(tmp_path)
    ghost = _ghost(tmp_path, refused_port)
    cdn = tmp_path / "cdn"
    live = tmp_path / "t2.db"
    transport = [sys.executable, str(BIN / "fc-transport"), "-q", "--state", str(live), "--to", f"file://{cdn}"]
    watch = [sys.executable, str(BIN / "fc-watch"), "--state", str(tmp_path / "w.db"), str(site)]
    w = subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    t = subprocess.Popen(transport, stdin=w.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert w.stdout is not None
    w.stdout.close()
    try:
        _wait("the live pipeline sends the tree", lambda: _files(cdn) == FILES)
        _wait("fc-transport registers", lambda: str(live) in _acks(tmp_path / "w.db"))
        res = _sh(_cmd("fc-watch", "--state", tmp_path / "w.db", "--forget-reader", live), check=4)
        assert "is running" in res.stderr and f"pid {t.pid}" in res.stderr, res.stderr
        assert str(live) in _acks(tmp_path / "w.db")
        # the vanished one, under the running fc-watch, which is killed as the forgetting goes on
        (site / "css" / "f0.css").unlink()
        (site / "css" / "f1.css").unlink()
        (site / "late.css").write_text("late{}\n")
        forget = subprocess.Popen(
            [sys.executable, str(BIN / "fc-watch"), "--state", str(tmp_path / "w.db"), "--forget-reader", str(ghost)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # (no assertion on timing: the kill lands before, during or after the forgetting)
        w.send_signal(signal.SIGKILL)
        out, err = forget.communicate(timeout=60)
        assert forget.returncode == 0 and f"forgot reader {ghost}" in out and "Traceback" not in err, err
        assert t.wait(timeout=180) in (0, 4), t.stderr.read() if t.stderr else ""
    finally:
        for p in (w, t):
            if p.poll() is None:
                p.kill()
                p.wait()
        if t.stderr:
            t.stderr.close()
    assert list(_acks(tmp_path / "w.db")) == [str(live)]
    again = _cmd("fc-transport", "-q", "--state", live, "--to", f"file://{cdn}")
    _sh(_watch(tmp_path), again)
    want = {rel: text for rel, text in FILES.items() if rel not in ("css/f0.css", "css/f1.css")}
    assert _files(cdn) == want | {"late.css": "late{}\n"}, "the remaining reader got every change, deletions too"
    assert _sh(_watch(tmp_path), "cat").stdout == "", "nothing is kept for a reader that is gone"


def test_a_stage_forgets_a_vanished_reader_the_same_way(tmp_path: Path, refused_port: int) -> None:
    """A stage in the middle (fc-relay: the durable runner) keeps its outbox for its readers as fc-watch keeps its
    rows: --readers and --forget-reader on its state file, the same code."""
    _site(tmp_path)
    relay = _cmd("fc-relay", "-q", "--state", tmp_path / "r.db")
    ghost = _ghost(tmp_path, refused_port, "t.db", relay)
    look = _sh(_watch(tmp_path), _cmd("fc-relay", "--state", tmp_path / "r.db"), "cat")  # (not -q: its warning)
    seen = _lines(look.stdout)
    assert sorted(ev["rel"] for ev in seen) == sorted(FILES), "the stage re-sends what its vanished reader lacks"
    assert f"fc-relay --state {tmp_path / 'r.db'} --forget-reader {ghost}" in look.stderr, look.stderr
    listed = _sh(_cmd("fc-relay", "--state", tmp_path / "r.db", "--readers")).stdout
    assert str(ghost) in listed and "state file gone" in listed, listed
    _sh(_cmd("fc-relay", "--state", tmp_path / "r.db", "--forget-reader", ghost))
    assert _sh(_watch(tmp_path), relay, "cat").stdout == ""


def test_hostile_rows_in_the_acks_table_are_shown_escaped_and_never_hang(tmp_path: Path) -> None:
    """The acks table is untrusted: a name with a terminal's escape sequence or a newline, one that is not UTF-8,
    numbers that are not numbers, a FIFO where the reader's lock would be (lock_holder opened it and waited for a
    writer for ever)."""
    _site(tmp_path)
    _sh(_watch(tmp_path), "cat > /dev/null")
    d = tmp_path / "r"
    d.mkdir()
    os.mkfifo(d / "fifo.db.lock")
    conn = sqlite3.connect(tmp_path / "w.db")
    epoch = format(conn.execute("SELECT value FROM meta WHERE name='epoch'").fetchone()[0], "x")
    rows = [
        (str(d / "fifo.db"), epoch, 1, time.time(), "s"),
        ("/x/\x1b[31mred\nfc-watch: forged line.db", epoch, 2, time.time(), "s"),
        (b"/x/\xff\xfe.db", epoch, 3, time.time(), "s"),
        ("/x/text-seq.db", epoch, "many", "soon", "s"),
    ]
    with conn:
        conn.executemany("INSERT INTO acks(reader, epoch, seq, at, session) VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()
    listed = subprocess.run(
        [sys.executable, BIN / "fc-watch", "--state", tmp_path / "w.db", "--readers"],
        capture_output=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout.decode()
    assert "\x1b" not in out and "\nfc-watch: forged" not in out and "\\x1b[31mred\\n" in out, out
    assert str(d / "fifo.db") in out and "/x/\\xff\\xfe.db" in out, out
    assert "text-seq" not in out  # not shown as something it is not
    _sh(_cmd("fc-watch", "--state", tmp_path / "w.db", "--forget-reader", d / "fifo.db"))
    assert str(d / "fifo.db") not in _acks(tmp_path / "w.db")


def _eight_days_pass(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    with conn:
        conn.execute("UPDATE acks SET at=at-8*86400")
    conn.close()


def test_a_reader_silent_for_over_7_days_is_no_longer_re_sent_to(tmp_path: Path, refused_port: int) -> None:
    """What docs/durability.md promised: a reader not heard from for 7 days, its state file gone, is no longer
    re-sent to.  fc-watch counted it at each start (acks.sessions), so its lines came again at every run, for
    good.  Its row stays (--forget-reader ends it): a fresh reader at that path may still come."""
    _site(tmp_path)
    ghost = _ghost(tmp_path, refused_port)
    assert not ghost.exists()
    _eight_days_pass(tmp_path)
    assert _sh(_watch(tmp_path), "cat").stdout == ""
    assert list(_acks(tmp_path / "w.db")) == [str(ghost)]


def test_a_cron_job_run_every_8_days_gets_what_its_interrupted_run_had_not(tmp_path: Path) -> None:
    """A reader silent for over 7 days whose state file is there may run again: a cron job run less often than
    that, whose last run never took its lines (here: a look with `cat` in between, as an interrupted run leaves
    them), gets them at its next run, the deletions included.  Before, the new file came a run late and the
    deletion never: its tombstone went, and the deleted file stayed at the destination for good."""
    site = _site(tmp_path)
    cdn = tmp_path / "cdn"
    transport = _cmd("fc-transport", "-q", "--state", tmp_path / "t.db", "--to", f"file://{cdn}")
    _sh(_watch(tmp_path), transport)
    assert _files(cdn) == FILES
    (site / "css/f0.css").unlink()
    (site / "new.css").write_text("n{}\n")
    _sh(_watch(tmp_path), "cat > /dev/null")  # the lines of the changes, taken by no File Conveyor reader
    _eight_days_pass(tmp_path)
    _sh(_watch(tmp_path), transport)
    assert _files(cdn) == {**{k: v for k, v in FILES.items() if k != "css/f0.css"}, "new.css": "n{}\n"}
    assert _sh(_watch(tmp_path), "cat").stdout == ""  # and nothing is kept for it any more


def test_a_fresh_reader_at_a_deleted_readers_path_gets_what_it_never_finished(
    tmp_path: Path, refused_port: int
) -> None:
    """Why a reader whose state file is gone is not forgotten on its own (docs/durability.md): the same command
    run again, its state file deleted to start over, is sent the lines the vanished one never finished only
    because fc-watch still keeps them for that path; forgotten, a run in which nothing changed sends it none."""
    _site(tmp_path)
    ghost = _ghost(tmp_path, refused_port)
    cdn = tmp_path / "cdn"
    _sh(_watch(tmp_path), _cmd("fc-transport", "-q", "--state", ghost, "--to", f"file://{cdn}"))
    assert _files(cdn) == FILES
