"""State files: WAL, migrations, one process per file, errors that say what to do."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from fileconveyor.errors import StateBusy, StateError
from fileconveyor.state import State

MIGRATIONS = ["CREATE TABLE a(x)", "CREATE TABLE b(y); INSERT INTO b VALUES (1)"]


def test_migrations_run_once_in_order(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    with State(p, MIGRATIONS[:1]) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with State(p, MIGRATIONS) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert s.db.execute("SELECT count(*) FROM b").fetchone()[0] == 1
    with State(p, MIGRATIONS) as s:  # nothing runs twice
        assert s.db.execute("SELECT count(*) FROM b").fetchone()[0] == 1


def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    with pytest.raises(StateError):
        State(p, ["CREATE TABLE a(x)", "CREATE TABLE c(z); INSERT INTO nosuch VALUES (1)"])
    db = sqlite3.connect(p)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name='c'").fetchone() is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    State(p, MIGRATIONS).close()
    with pytest.raises(StateError, match="newer"):
        State(p, MIGRATIONS[:1])


def _hold(path: str, ready, done) -> None:  # type: ignore[no-untyped-def]
    s = State(Path(path), MIGRATIONS)
    ready.set()
    done.wait(10)
    s.close()


def test_second_process_is_refused_while_first_runs(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(p), ready, done))
    proc.start()
    try:
        assert ready.wait(20)
        with pytest.raises(StateBusy, match=r"in use by another process \(pid \d+") as info:
            State(p, MIGRATIONS)
        # the same stage started twice: the fix is to stop one, not a --state of its own (it would send
        # everything again)
        assert f"stop that one first (kill {proc.pid})" in str(info.value)
        assert "own --state" not in str(info.value)
    finally:
        done.set()
        proc.join(10)
    State(p, MIGRATIONS).close()  # free again once the holder is gone


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with State(tmp_path / "s.db", MIGRATIONS) as s:
        with pytest.raises(RuntimeError), s.transaction() as db:
            db.execute("INSERT INTO a VALUES (1)")
            raise RuntimeError
        assert s.db.execute("SELECT count(*) FROM a").fetchone()[0] == 0


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create state directory"):
        State(blocker / "sub" / "s.db", MIGRATIONS)


def test_a_forked_child_does_not_keep_the_state_locked(tmp_path: Path) -> None:
    """fc-watch forks scan workers; one that outlives its killed parent must not keep
    the state file locked (found by make chaos: fc-watch could not restart)."""
    import os
    import signal
    import time

    first = State(tmp_path / "s.db", [])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: lives on, as a stuck worker would
        os.write(w, b"x")  # the fork handlers have run by now
        time.sleep(30)
        os._exit(0)
    try:
        os.read(r, 1)
        first.close()
        second = State(tmp_path / "s.db", [])  # StateBusy if the child still held the lock
        second.close()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)


def test_a_stage_state_file_is_checkpointed_by_a_thread_not_by_its_commits(tmp_path: Path) -> None:
    """SQLite checkpoints inside the commit that crosses 1,000 pages: two or three fsyncs in a stage's main loop,
    which a live file waited for (issue 18).  A stage's state file is checkpointed by a thread of its own."""
    import os
    import time

    from fileconveyor.delivery.durable import StageState
    from fileconveyor.state import CHECKPOINT_COMMITS

    st = StageState(tmp_path / "s.db")
    try:
        assert st.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # commits never checkpoint
        size = os.path.getsize(tmp_path / "s.db")
        for i in range(CHECKPOINT_COMMITS + 20):  # far below 1,000 pages: SQLite alone would not checkpoint yet
            with st.transaction() as db:
                st.add_outbox(db, [(i + 1, b"x" * 2000)])
        deadline = time.monotonic() + 10
        while os.path.getsize(tmp_path / "s.db") <= size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.getsize(tmp_path / "s.db") > size  # the pages reached the database file
        assert st.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == CHECKPOINT_COMMITS + 20
    finally:
        st.close()


def test_state_files_and_the_records_database_keep_a_small_page_cache(tmp_path: Path) -> None:
    """SQLite's default cache, 2 MB per connection, filled up in every stage of a pipeline (issue 18, memory)."""
    from fileconveyor.records.sqlite import Records

    with State(tmp_path / "s.db", MIGRATIONS) as s:
        assert s.db.execute("PRAGMA cache_size").fetchone()[0] == -512
    records = Records(tmp_path / "synced.db")
    try:
        assert records.db.execute("PRAGMA cache_size").fetchone()[0] == -512
    finally:
        records.close()


def test_a_stage_state_file_is_checkpointed_during_a_run_of_a_few_dozen_commits(tmp_path: Path) -> None:
    """What is not checkpointed when a state file closes is checkpointed by the close, at the end of the run, on
    the critical path of a pipeline: fc-transport's ~40 commits of 10,000 small files were all left to its close
    (40-90 ms at its end).  A run of 30 commits has them checkpointed by the thread while it goes on."""
    import os
    import time

    from fileconveyor.delivery.durable import StageState

    st = StageState(tmp_path / "s.db")
    try:
        size = os.path.getsize(tmp_path / "s.db")
        for i in range(30):
            with st.transaction() as db:
                st.add_outbox(db, [(i + 1, b"x" * 2000)])
        deadline = time.monotonic() + 3  # the thread looks every CHECKPOINT_LOOK (0.5 s)
        while os.path.getsize(tmp_path / "s.db") <= size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.getsize(tmp_path / "s.db") > size, "nothing checkpointed while the run went on"
    finally:
        st.close()


def test_bytes_are_stored_as_the_same_blobs_and_other_types_as_before(tmp_path: Path) -> None:
    """state.py registers an adapter for bytes (a cost per parameter, not a change of what is stored): a bytes
    value is a BLOB of its bytes, a bytes subclass and a bytearray still go the module's own way."""

    class Sub(bytes):
        pass

    st = State(tmp_path / "s.db", ["CREATE TABLE t(k INTEGER PRIMARY KEY, v)"])
    try:
        values = [b"", b"\x00\xff\n{}", Sub(b"sub"), bytearray(b"ba"), "text", 7]
        st.db.executemany("INSERT INTO t(k, v) VALUES (?, ?)", list(enumerate(values)))
        got = st.db.execute("SELECT typeof(v), v FROM t ORDER BY k").fetchall()
    finally:
        st.close()
    assert got == [
        ("blob", b""),
        ("blob", b"\x00\xff\n{}"),
        ("blob", b"sub"),
        ("blob", b"ba"),
        ("text", "text"),
        ("integer", 7),
    ]


def test_a_state_file_closes_without_a_checkpoint_and_loses_nothing(tmp_path: Path) -> None:
    """The connection closing last checkpointed the WAL into the file and removed it: fsyncs of both and the
    unlink of megabytes at the end of every run, on the critical path of a pipeline (fc-transport: 40-90 ms).
    Its close leaves the WAL as a kill -9 would, and the next open reads every commit from it."""
    import ctypes  # noqa: F401  (before Python 3.12, keep_wal_at_close needs it imported, as the stages have it)
    import os

    from fileconveyor.delivery.durable import StageState

    p = tmp_path / "s.db"
    st = StageState(p)
    try:
        for i in range(5):
            with st.transaction() as db:
                st.add_outbox(db, [(i + 1, b"x" * 2000)])
    finally:
        st.close()
    assert os.path.getsize(f"{p}-wal") > 0  # not checkpointed, not removed
    st = StageState(p)
    try:
        assert [seq for seq, _ in st.outbox_after(0)] == [1, 2, 3, 4, 5]
        with st.transaction() as db:
            st.add_outbox(db, [(6, b"y")])
    finally:
        st.close()
    db = sqlite3.connect(p)  # a plain connection (closing last, it checkpoints as SQLite does by default)
    try:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 6
    finally:
        db.close()
    assert not os.path.exists(f"{p}-wal")


def test_an_acknowledgement_connection_leaves_its_writers_wal_at_its_close(tmp_path: Path) -> None:
    """A reader acknowledging to a writer that has ended (fc-watch --scan-once) had the connection that closed
    last: its close checkpointed the writer's file, fsyncs on the reader's way to its exit (30 ms in
    fc-transport's end).  What it wrote stays in the writer's WAL, read by whoever opens the file next."""
    import ctypes  # noqa: F401  (before Python 3.12, keep_wal_at_close needs it imported, as the stages have it)
    import os

    from fileconveyor.delivery import ack_check

    p = tmp_path / "w.db"
    db = sqlite3.connect(p)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE acks(reader TEXT PRIMARY KEY, seq INTEGER)")
    db.close()
    assert not os.path.exists(f"{p}-wal")
    conn = ack_check.open_state(str(p))
    conn.execute("INSERT INTO acks VALUES ('r', 7)")
    conn.close()
    assert os.path.getsize(f"{p}-wal") > 0
    db = sqlite3.connect(p)
    try:
        assert db.execute("SELECT seq FROM acks").fetchall() == [(7,)]
    finally:
        db.close()


def test_keep_wal_at_close_says_when_it_cannot(tmp_path: Path) -> None:
    """Only an open sqlite3 connection is asked (a handle read from a closed one is NULL); False means SQLite's
    usual checkpoint at close, as before."""
    import ctypes  # noqa: F401  (before Python 3.12, keep_wal_at_close needs it imported, as the stages have it)
    import sys

    from fileconveyor.state import keep_wal_at_close

    db = sqlite3.connect(tmp_path / "x.db")
    if sys.implementation.name == "cpython":
        assert keep_wal_at_close(db) is True
    db.close()
    assert keep_wal_at_close(db) is False
    assert keep_wal_at_close(object()) is False  # type: ignore[arg-type]
