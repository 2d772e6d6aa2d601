"""Readers never see "database is locked" while fc-record writes (the original's issue #149)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from fileconveyor import events as E
from tests.record.conftest import BIN

N = 10_000


def _events(n: int) -> bytes:
    out = []
    for i in range(n):
        rel = f"d{i % 50}/f{i}.css"
        out.append(
            E.encode(
                {
                    "v": 1,
                    "id": f"{i:032x}",
                    "kind": "created",
                    "source": "s",
                    "root": "/srv/www",
                    "path": f"/srv/www/{rel}",
                    "rel": rel,
                    "size": i,
                    "mtime_ns": str(10**18 + i),
                    "ino": i,
                    "server": "cdn",
                    "remote": rel,
                    "url": f"https://cdn.example/{rel}",
                    "transported": "uploaded",
                }
            )
        )
    return b"".join(out)


def test_a_reader_is_never_locked_out_during_10000_writes(tmp_path: Path) -> None:
    db = tmp_path / "synced_files.db"
    data = _events(N)
    proc = subprocess.Popen(
        [sys.executable, str(BIN / "fc-record"), "--db", str(db), "--state", str(tmp_path / "r.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    errors: list[str] = []
    seen: dict[int, list[int]] = {0: [], 1: []}
    done = threading.Event()

    def reader(me: int) -> None:
        while not db.exists():
            time.sleep(0.005)
        # timeout=0: the reader does not wait at all, so any lock would show up at once as an error
        con = sqlite3.connect(db, timeout=0)
        while not done.is_set():
            try:
                (n,) = con.execute("SELECT count(*) FROM synced_files").fetchone()
                con.execute(
                    "SELECT url FROM synced_files WHERE input_file = ? AND server = ?", ("/srv/www/d1/f1.css", "cdn")
                ).fetchone()
                seen[me].append(n)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # fc-record has not created it yet
                    continue
                errors.append(str(exc))
        con.close()

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in readers:
        t.start()
    try:
        _, err = proc.communicate(data, timeout=120)
    finally:
        done.set()
        for t in readers:
            t.join(10)
    assert proc.returncode == 0, err.decode()
    assert not errors, errors[:5]
    # the readers really read while the writes went on, and saw them progress
    for counts in seen.values():
        assert len(counts) > 50
        # fc-record commits a round (up to 2,000 lines) at a time: a few partial counts, not thousands
        assert len({n for n in counts if 0 < n < N}) >= 2, "the reader never saw a partial count: no overlap"
        assert counts == sorted(counts)  # committed records only ever add up
    assert sqlite3.connect(db).execute("SELECT count(*) FROM synced_files").fetchone() == (N,)
