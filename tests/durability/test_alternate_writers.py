"""One fc-transport state fed by two fc-watch state files in turn (``fc-watch --state a.db`` one day, ``--state b.db``
the next, into the same ``fc-transport --state t.db``): an ordinary thing, which made fc-transport warn
"not acknowledging to a.db: no process writing our input has it open (a forged hop?)".

At its start a reader tells every writer its state knows that a new process reads (durable.Acknowledger), a.db
among them, whose lines no longer come; the check that a process writing our input has a.db open (ack_check)
fails, as it does for a forged line, and a.db was refused for the whole run.  No line named a.db: nothing was
forged.  Now such a writer is only set aside, with a plain word (-v), and looked at again when a line of it comes:
a FIFO fed by b's fc-watch and then by a's again has a's lines acknowledged, where before a.db got none for the
run (and re-sent them next time).  A line that names a writer no process writing our input has open is still
warned about (tests/security/test_forged_acks.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fileconveyor.delivery import ack_check
from tests.conftest import ROOT

BIN = ROOT / "bin"
PLAIN = "does not write our input now"  # (durable.ABSENT)


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(BIN / cmd), *args], **kw)  # type: ignore[call-overload]


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.1)


def _day(site: Path, day: int, n: int = 5) -> set[str]:
    names = {f"day{day}-{i}.txt" for i in range(n)}
    for name in names:
        (site / name).write_text(name)
    return names


def _first_day(tmp: Path, site: Path, dest: Path) -> set[str]:
    """fc-watch --state a.db | fc-transport --state t.db, once (a cron run): t.db's state knows a.db."""
    files = _day(site, 1)
    script = (
        f"{sys.executable} {BIN / 'fc-watch'} --scan-once --state {tmp / 'a.db'} {site} | "
        f"{sys.executable} {BIN / 'fc-transport'} -q --to file://{dest} --state {tmp / 't.db'} >/dev/null"
    )
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, timeout=120)
    assert {p.name for p in dest.iterdir()} == files
    return files


def test_the_next_day_with_another_watch_state_says_nothing_of_forgery(tmp_path: Path) -> None:
    site, dest = tmp_path / "site", tmp_path / "dest"
    site.mkdir()
    dest.mkdir()
    want = _first_day(tmp_path, site, dest)
    want |= _day(site, 2)
    err = tmp_path / "transport.err"
    # the next day: fc-watch --state b.db, live, into the same fc-transport state; fc-transport looks at a.db as
    # the pipeline starts, and again until fc-watch is older than ack_check.STARTING
    script = (
        f"exec {sys.executable} {BIN / 'fc-watch'} --state {tmp_path / 'b.db'} {site} | "
        f"{sys.executable} {BIN / 'fc-transport'} -v --to file://{dest} --state {tmp_path / 't.db'} "
        f">/dev/null 2>{err}"
    )
    pipeline = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    try:
        _wait(lambda: err.exists() and ("forged" in err.read_text() or PLAIN in err.read_text()), 90, "word of a.db")
        want |= _day(site, 3)
        _wait(lambda: {p.name for p in dest.iterdir()} >= want, 60, "day 3's files")
    finally:
        os.killpg(pipeline.pid, signal.SIGTERM)
        pipeline.wait()
    text = err.read_text()
    assert "forged" not in text, text
    assert f"{tmp_path / 'a.db'} {PLAIN}" in text, text
    assert {p.name for p in dest.iterdir()} == want


def _ack(state: Path, reader: Path) -> int | None:
    db = sqlite3.connect(state)
    try:
        row = db.execute("SELECT seq FROM acks WHERE reader = ?", (str(reader),)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def _last_batch(state: Path) -> int:
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT value FROM meta WHERE name = 'last_batch'").fetchone()[0]
    finally:
        db.close()


def test_a_writer_of_an_earlier_run_that_comes_back_on_the_fifo_is_acknowledged(tmp_path: Path) -> None:
    site, dest = tmp_path / "site", tmp_path / "dest"
    site.mkdir()
    dest.mkdir()
    want = _first_day(tmp_path, site, dest)
    a_db, t_db = tmp_path / "a.db", tmp_path / "t.db"
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo, 0o600)
    # A process that holds the FIFO open for writing all along (as a supervisor may), older than
    # ack_check.STARTING when fc-transport starts: fc-transport's first look at a.db finds a writer of its input,
    # settled, without a.db open, at once.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time; os.open(sys.argv[1], os.O_RDWR); time.sleep(600)", str(fifo)],
        stdin=subprocess.DEVNULL,
    )
    procs = [holder]
    err = tmp_path / "transport.err"
    try:
        time.sleep(ack_check.STARTING + 1)
        with err.open("wb") as e:
            procs.append(fc("fc-transport", "-v", "--to", f"file://{dest}", "--state", str(t_db), "--input",
                            str(fifo), stdout=subprocess.DEVNULL, stderr=e))  # fmt: skip
        _wait(lambda: "forged" in err.read_text() or PLAIN in err.read_text(), 60, "word of a.db")
        assert "forged" not in err.read_text(), err.read_text()
        before = _ack(a_db, t_db)
        with (tmp_path / "watch.err").open("wb") as e:
            b = fc("fc-watch", "--state", str(tmp_path / "b.db"), "--output", str(fifo), str(site), stderr=e)
        procs.append(b)
        want |= _day(site, 2)
        _wait(lambda: {p.name for p in dest.iterdir()} >= want, 60, "day 2's files")
        b.send_signal(signal.SIGTERM)
        b.wait(60)
        # a's fc-watch again, into the same FIFO, the same fc-transport reading it
        want |= _day(site, 3)
        with (tmp_path / "watch.err").open("ab") as e:
            procs.append(fc("fc-watch", "--state", str(a_db), "--output", str(fifo), str(site), stderr=e))
        _wait(lambda: {p.name for p in dest.iterdir()} >= want, 60, "day 3's files")
        # its lines are acknowledged: before, a.db was refused for the run and its row stayed where day 1 left it
        _wait(lambda: _ack(a_db, t_db) == _last_batch(a_db), 30, f"acknowledgement to a.db (it had {before})")
        assert "forged" not in err.read_text(), err.read_text()
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
