"""fc-watch --output FIFO -> fc-tee -> FIFO -> fc-relay, and fc-tee killed -9 while it holds lines it read from
fc-watch and has not written on (its reader is slow), with more in fc-watch's pipe: the reader behind fc-tee is
never restarted, so it never registers again, and only fc-watch can give those lines again.  It must, when its
FIFO's next reader comes, from what its File Conveyor readers acknowledged, before any newer line: repeating only
the block it was writing let the reader's mark jump past the lost lines (the CI run's "branch b lost 89").  When
fc-watch wrote nothing while fc-tee was replaced, it cannot know: the reader, whose FIFO's writer went, asks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT

BIN = ROOT / "bin"
N = 600  # about 200 KB of lines: more than the pipes hold, so fc-watch waits on its write while fc-tee holds some
N_IDLE = 180  # more than fc-tee's output pipe holds, less than both pipes: fc-watch has written them all


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    command = RELAY if cmd == "fc-relay" else BIN / cmd  # fc-relay: a durable stage (tests/relay.py)
    return subprocess.Popen([sys.executable, str(command), *args], **kw)  # type: ignore[call-overload]


def wait_for(what, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return False


def query(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(sql).fetchone()
        return row[0] if row and row[0] is not None else 0
    except sqlite3.OperationalError:  # not made yet
        return 0
    finally:
        conn.close()


@pytest.mark.parametrize("idle", [False, True], ids=["watch-writing", "watch-idle"])
def test_lines_a_killed_fc_tee_held_come_again_from_fc_watch(tmp_path: Path, idle: bool) -> None:
    """watch-writing: fc-watch is in the middle of a write when fc-tee dies (it sees the reader go, and re-sends
    from the acknowledgements to the next one).  watch-idle: fc-watch has written everything and writes nothing
    until the next fc-tee has opened its FIFO, so it never sees a reader go: the reader behind fc-tee, whose
    input FIFO's writer went and came back, asks for the replay itself (a new session, as after a restart)."""
    n = N_IDLE if idle else N
    site = tmp_path / "site"
    site.mkdir()
    (site / "first.css").write_text("x")
    watch_fifo, b_fifo = tmp_path / "watch.fifo", tmp_path / "b.fifo"
    os.mkfifo(watch_fifo)
    os.mkfifo(b_fifo)
    out = tmp_path / "b.jsonl"
    wdb = tmp_path / "watch.db"
    werr = tmp_path / "watch.err"

    def tee() -> subprocess.Popen[bytes]:
        return fc("fc-tee", "--input", str(watch_fifo), "--output", str(b_fifo), stderr=subprocess.DEVNULL)

    def rels() -> set[str]:
        if not out.exists():
            return set()
        return {json.loads(x)["rel"] for x in out.read_bytes().splitlines(keepends=True) if x.endswith(b"\n")}

    procs = {
        "b": fc(
            "fc-relay",
            "--min-size",
            "0",
            "--input",
            str(b_fifo),
            "--output",
            str(out),
            "--state",
            str(tmp_path / "b.db"),
            stderr=subprocess.DEVNULL,
        ),
        "tee": tee(),
        "watch": fc("fc-watch", "--state", str(wdb), "--output", str(watch_fifo), str(site), stderr=werr.open("wb")),
    }
    try:
        assert wait_for(lambda: "first.css" in rels())
        assert wait_for(lambda: query(wdb, "SELECT max(seq) FROM acks") >= 1)  # b acknowledged to fc-watch
        procs["b"].send_signal(signal.SIGSTOP)  # a slow reader: fc-tee fills its pipe, then holds what it read
        for i in range(n):
            (site / f"file-with-a-longish-name-{i:04d}.css").write_text("x")
        # fc-watch commits, then writes until the pipes are full (it waits on its write there): fc-tee has read
        # what fits, and is blocked writing to b
        assert wait_for(lambda: query(wdb, "SELECT value FROM meta WHERE name='last_batch'") >= 100), (
            query(wdb, "SELECT value FROM meta WHERE name='last_batch'"),
            werr.read_text(),
        )
        time.sleep(1.5)
        procs["tee"].kill()
        procs["tee"].wait()
        if idle:
            procs["tee"] = tee()  # at once: fc-watch, writing nothing meanwhile, cannot see its reader change
            procs["b"].send_signal(signal.SIGCONT)
            time.sleep(1.0)
            (site / "last.css").write_text("x")
        else:
            procs["b"].send_signal(signal.SIGCONT)
            (site / "last.css").write_text("x")  # fc-watch writes again: its reader is gone
            assert wait_for(lambda: b"went away" in werr.read_bytes()), werr.read_text()
            procs["tee"] = tee()
        want = {"first.css", "last.css", *(f"file-with-a-longish-name-{i:04d}.css" for i in range(n))}
        wait_for(lambda: rels() >= want)
        assert len(want - rels()) == 0, f"lost {len(want - rels())}: {sorted(want - rels())[:5]}"
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
