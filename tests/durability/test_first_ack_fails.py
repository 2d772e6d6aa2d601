"""A reader restarted behind a live fc-watch whose first acknowledgement fails (the writer's state file is
locked for longer than the 0.5 s the reader waits): lines its killed predecessor had read and not stored
must still arrive.

Without a hold, the first line the new reader takes (here: one its predecessor left in the FIFO's buffer)
moves its mark past the lost lines; its acknowledgement, once the lock is gone, then asks fc-watch for a
replay after that line only, and fc-watch re-sends nothing else (its FIFO reopen re-sends the block it was
writing, not what an earlier reader read)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT, held_for

WATCH = [sys.executable, str(ROOT / "bin" / "fc-watch")]
FILTER = [sys.executable, str(RELAY)]


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def meta(db: Path) -> tuple[int, dict[str, tuple[str, int]]]:
    """fc-watch's last seq and its readers' (session, acknowledged seq)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        (last,) = conn.execute("SELECT value FROM meta WHERE name='last_batch'").fetchone()
        acks = {r: (s, q) for r, s, q in conn.execute("SELECT reader, session, seq FROM acks")}
    finally:
        conn.close()
    return last, acks


def acked(wdb: Path, fdb: Path) -> int | None:
    try:
        return meta(wdb)[1].get(str(fdb), ("", None))[1]
    except sqlite3.Error:  # not made yet
        return None


def rels(data: bytes) -> list[str]:
    return [json.loads(x)["rel"] for x in data.splitlines(keepends=True) if x.endswith(b"\n")]


def stored_mark(fdb: Path) -> int:
    conn = sqlite3.connect(f"file:{fdb}?mode=ro", uri=True, timeout=5)
    try:
        (hwm,) = conn.execute("SELECT hwm FROM upstream").fetchone()
    finally:
        conn.close()
    return hwm


@pytest.mark.parametrize("past_the_hold", [False, True], ids=["locked-briefly", "locked-past-the-hold"])
def test_reader_whose_first_acknowledgement_fails_still_gets_what_its_predecessor_lost(
    tmp_path: Path, past_the_hold: bool
) -> None:
    """locked-briefly: the reader holds fc-watch's lines until the replay its acknowledgement asks for, once it
    gets through.  locked-past-the-hold: the lock outlasts the hold (Holding.AWAIT_SECONDS); the line is taken
    then, but the stored and acknowledged mark stays at M, so the replay still starts there."""
    site = tmp_path / "site"
    site.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.ndjson"
    wdb, fdb = tmp_path / "w.db", tmp_path / "f.db"
    watch = subprocess.Popen(
        [*WATCH, "--state", str(wdb), "--output", str(fifo), str(site)], stderr=(tmp_path / "w.err").open("wb")
    )

    def reader(err: str) -> subprocess.Popen[bytes]:
        # past the hold: it outlasts a hold of 2 s (the test waits for its end) as well as one of 10
        argv = held_for(2.0, "relay") if past_the_hold else FILTER
        return subprocess.Popen(
            [*argv, "--input", str(fifo), "--output", str(out), "--state", str(fdb)],
            stderr=(tmp_path / err).open("wb"),
        )

    procs = [watch, reader("r1.err")]
    lock: sqlite3.Connection | None = None
    try:
        # 1. a reader takes five files and acknowledges them (its mark M = 5)
        for i in range(5):
            (site / f"a{i}.css").write_text("a")
        wait_for("the first reader's acknowledgement", lambda: acked(wdb, fdb) == 5)
        assert meta(wdb)[0] == 5
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()

        # 2. its process reads three more lines and dies before storing them (a process holding the FIFO's read
        # end stands for it: fc-watch sees the same thing), leaving a fourth line unread in the FIFO's buffer
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        got = b""
        for i in range(3):
            (site / f"b{i}.css").write_text("b")

        def read_three() -> bool:
            nonlocal got
            try:
                got += os.read(fd, 65536)
            except BlockingIOError:
                pass
            return len(rels(got)) >= 3

        wait_for("three lines read by the doomed reader", read_three)
        assert sorted(rels(got)) == ["b0.css", "b1.css", "b2.css"]
        (site / "c0.css").write_text("c")

        def unread() -> int:
            buf = bytearray(4)
            fcntl.ioctl(fd, termios.FIONREAD, buf)
            return int.from_bytes(buf, sys.byteorder)

        wait_for("the fourth line in the FIFO", lambda: meta(wdb)[0] == 9 and unread() > 0)
        os.close(fd)

        # 3. a new reader starts while fc-watch's state file is locked: its first acknowledgement fails
        lock = sqlite3.connect(wdb, isolation_level=None, timeout=5)
        lock.execute("BEGIN EXCLUSIVE")
        procs[1] = reader("r2.err")
        wait_for(
            "the new reader's failed acknowledgement",
            lambda: b"database is locked" in (tmp_path / "r2.err").read_bytes(),
        )
        if past_the_hold:
            wait_for("the hold to end", lambda: b"without its replay" in (tmp_path / "r2.err").read_bytes(), 30)
            wait_for("c0 taken after the hold", lambda: b"c0.css" in out.read_bytes())
            assert stored_mark(fdb) == 5  # a reader killed now would ask again from M
        else:
            # the old code takes the line left in the FIFO at once (its mark passes the three lost lines); held,
            # it does not show up: either way, the lock goes after that
            taken_by = time.monotonic() + 2.0
            wait_for("c0 taken, or 2 s", lambda: time.monotonic() > taken_by or b"c0.css" in out.read_bytes())
        lock.execute("ROLLBACK")
        lock.close()
        lock = None

        # 4. every line arrives: the acknowledgement, now written, asks fc-watch for a replay after M
        want = {"a0.css", "a1.css", "a2.css", "a3.css", "a4.css", "b0.css", "b1.css", "b2.css", "c0.css"}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not want <= set(rels(out.read_bytes())):
            time.sleep(0.1)
        missing = want - set(rels(out.read_bytes()))
        assert not missing, f"lost: {sorted(missing)}; reader: {(tmp_path / 'r2.err').read_text()}"
    finally:
        if lock is not None:
            lock.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
