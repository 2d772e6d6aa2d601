"""Readers never see "database is locked" while fc-record writes (the original's issue #149)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

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
        # The file's first instant is SQLite's: the first connections to a WAL file build its index (recovery),
        # and a reader that opens it then with no busy timeout may be told "database is locked" by another
        # reader's or fc-record's first read (2-3 creations in ~750, with two readers polling every 5 ms: this
        # test's rare failure).  The first read may wait; from then on, during the writes, the reader does not
        # wait at all (busy timeout 0), so any lock would show up at once as an error.
        con = sqlite3.connect(db, timeout=10)
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
        con.execute("PRAGMA busy_timeout=0")
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


# The readers, with no busy timeout: one holding its connection (a long-lived reader), beside one opening a
# connection per read (a web request), read-only or read-write.  Not two that open per read and may write: the one
# closing checkpoints when it can, taking the file's pending lock an instant, which the other meets as "database is
# locked" (SQLite's doing, fc-record or not).  Nor one alone that opens per read: when no connection at all is
# open on the file, the first to open it rebuilds the WAL's index (SQLite's recovery, microseconds with the empty
# WAL fc-record leaves), and a reader arriving in that instant is told "locked" too (README: fc-record's database).
# That instant is also the test's start, when no connection is open (the first fc-record has closed): so the held
# reader connects first and its first read may wait, and only then does the other reader start, and fc-record's
# runs.  From then on the held connection keeps the WAL's index valid and no read waits at all.
READERS = {
    "held+fresh-ro": ("held", "fresh-ro"),
    "held+fresh": ("held", "fresh"),
}


@pytest.mark.parametrize("readers", sorted(READERS))
def test_readers_are_never_locked_out_while_fc_record_starts_and_stops(tmp_path: Path, readers: str) -> None:
    """A reader with no busy timeout (sqlite3.connect(path, timeout=0)) never meets "database is locked" because
    fc-record starts, restarts or stops: the web application's reads (the Drupal CDN module's, with whatever
    timeout its driver has) go on while a pipeline is restarted.  fc-record's runs are real processes, in turn: a
    plain one, one with --delete-source-after (a second writer connection, the deleter's) and --status (a
    read-only one)."""
    db = tmp_path / "synced_files.db"
    src = tmp_path / "src"
    src.mkdir()
    fc_record = [sys.executable, str(BIN / "fc-record"), "--db", str(db), "--state", str(tmp_path / "r.db")]
    runs = [
        [*fc_record],
        [*fc_record, "--delete-source-after", "3600", "--source", f"s={src}"],
        [sys.executable, str(BIN / "fc-record"), "--status", "--db", str(db)],
    ]
    first = subprocess.run(fc_record, input=_events(10), capture_output=True, timeout=60)
    assert first.returncode == 0, first.stderr.decode()

    done = threading.Event()
    connected = threading.Event()  # the held reader has read once: the WAL's index is built and stays so
    # The held connection closes last, once the other reader has stopped: its close (SQLite's checkpoint-on-close
    # attempt) takes the file's pending lock in this process an instant, which a connection of the same process
    # opening then meets as "database is locked" (measured: 20 of 300 such closes; the test's own teardown).
    close_held = threading.Event()
    errors: dict[str, list[str]] = {me: [] for me in READERS[readers]}
    reads = dict.fromkeys(READERS[readers], 0)

    def read(con: sqlite3.Connection, me: str) -> None:
        try:
            con.execute("SELECT count(*) FROM synced_files").fetchone()
            con.execute(
                "SELECT url FROM synced_files WHERE input_file = ? AND server = ?", ("/srv/www/d1/f1.css", "cdn")
            ).fetchone()
            reads[me] += 1
        except sqlite3.OperationalError as exc:
            errors[me].append(f"{exc} ({getattr(exc, 'sqlite_errorname', '?')})")  # SQLITE_BUSY_RECOVERY...

    def held(me: str) -> None:
        # The first read may wait: it is the first connection to the file, which rebuilds the WAL's index (the
        # only wait of the test, SQLite's, before any fc-record runs).  Then no busy timeout: a lock from then on
        # is an error at once.
        con = sqlite3.connect(db, timeout=30)
        con.execute("SELECT count(*) FROM synced_files").fetchone()
        con.execute("PRAGMA busy_timeout=0")
        connected.set()
        while not done.is_set():
            read(con, me)
        close_held.wait(30)
        con.close()

    def fresh(me: str) -> None:
        uri = f"file:{db}?mode=ro" if me == "fresh-ro" else f"file:{db}"
        connected.wait()  # (set before done in every path below)
        while not done.is_set():
            try:
                con = sqlite3.connect(uri, uri=True, timeout=0)
            except sqlite3.OperationalError as exc:
                errors[me].append(f"open: {exc}")
                continue
            read(con, me)
            con.close()

    holder, other = READERS[readers]
    held_thread, fresh_thread = (
        threading.Thread(target=held, args=(holder,)),
        threading.Thread(target=fresh, args=(other,)),
    )
    for t in (held_thread, fresh_thread):
        t.start()
    try:
        assert connected.wait(60), "the held reader could not open the database"
        for i in range(12):
            argv = runs[i % len(runs)]
            data = b"" if "--status" in argv else _events(10 + i * 40)
            res = subprocess.run(argv, input=data, capture_output=True, timeout=60)
            assert res.returncode == 0, res.stderr.decode()
    finally:
        connected.set()  # (a reader waiting for it ends too)
        done.set()
        fresh_thread.join(30)
        close_held.set()
        held_thread.join(30)
    failed = {me: len(e) for me, e in errors.items() if e}
    assert not failed, f"failed reads {failed} of {reads}: {[e[:2] for e in errors.values()]}"
    assert all(n > 20 for n in reads.values()), reads  # they really read while fc-record ran and stopped
