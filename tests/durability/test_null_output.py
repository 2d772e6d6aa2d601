"""The last stage writing into /dev/null (`fc-record > /dev/null`, the usual end of a pipeline): nobody can ever
read its lines, so none is encoded, stored in its outbox or written (delivery/sending.py, Sending.discards).  What
it must still do does not change: killed with -9 again and again behind a named FIFO and restarted, it records
every event (its writer re-sends what it did not acknowledge), and its state file holds no line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import RELAY, ROOT
from tests.durability.fifo_kills import feed_killing_the_reader, make_events

N = 3000


def recorded(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT event_id FROM synced_files")}
    except sqlite3.OperationalError:  # not made yet
        return set()


def test_a_last_stage_into_dev_null_keeps_no_line_and_loses_nothing_when_killed(tmp_path: Path) -> None:
    fifo = tmp_path / "a-to-b"
    os.mkfifo(fifo, 0o600)
    synced = tmp_path / "synced.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "lib")}
    writer = subprocess.Popen(
        [
            sys.executable,
            str(RELAY),
            "-v",
            "--output",
            str(fifo),
            "--state",
            str(tmp_path / "a.db"),
        ],
        stdin=subprocess.PIPE,
        stderr=(tmp_path / "a.err").open("wb"),
        env=env,
    )

    def start_reader() -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(ROOT / "bin" / "fc-record"), "-v", "--db", str(synced)]
        argv += ["--input", str(fifo), "--state", str(tmp_path / "b.db")]
        with open(os.devnull, "wb") as null:
            return subprocess.Popen(argv, stdout=null, stderr=(tmp_path / "b.err").open("ab"), env=env)

    assert writer.stdin is not None
    reader: subprocess.Popen[bytes] | None = None
    try:
        reader, kills = feed_killing_the_reader(
            writer.stdin,
            make_events(N, server="s1", url="https://cdn/f{i}.css", transported="uploaded"),
            start_reader,
            seed=11,
        )
        want = {f"id{i:05d}" for i in range(N)}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not want <= recorded(synced):
            time.sleep(0.2)
        missing = sorted(want - recorded(synced))
        assert kills >= 5
        assert not missing, f"{len(missing)} events never recorded after {kills} kills, e.g. {missing[:5]}"
        assert writer.wait(timeout=30) == 0, (tmp_path / "a.err").read_text()  # everything acknowledged to it
        with sqlite3.connect(tmp_path / "b.db") as db:
            assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0  # was every line it passed on
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        for p in (writer, reader):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
