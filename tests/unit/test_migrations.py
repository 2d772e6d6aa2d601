"""One migration mechanism (state.migrate) for every state file: files written by the code before it still open.

The old files below are made the way the code before commit "delivery: one migration mechanism" made them: a
stage's delivery tables by user_version with the ``acks`` table in the first script and its ``session`` column
added by the second, the stage's own tables by a second mechanism (the ``schema_versions`` table, statements split
on ";"); fc-watch's acks table from a copy of that definition.  The SQL is copied verbatim from that code.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fileconveyor.delivery.durable import StageState
from fileconveyor.errors import StateError
from fileconveyor.stages.process.stage import MIGRATIONS as PROCESS_MIGRATIONS
from fileconveyor.stages.watch.state import WatchState
from fileconveyor.state import State

OLD_STAGE = [
    """
    CREATE TABLE meta(k TEXT PRIMARY KEY, v);
    INSERT INTO meta(k, v) VALUES ('epoch', lower(hex(randomblob(8)))), ('written', 0);
    CREATE TABLE inbox(
        id INTEGER PRIMARY KEY,
        line BLOB NOT NULL,
        lane TEXT NOT NULL,
        key BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE TABLE outbox(seq INTEGER PRIMARY KEY, line BLOB NOT NULL);
    CREATE TABLE upstream(origin TEXT PRIMARY KEY, epoch TEXT NOT NULL, hwm INTEGER NOT NULL, seen REAL NOT NULL);
    CREATE TABLE acks(reader TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL);
    CREATE TABLE schema_versions(name TEXT PRIMARY KEY, version INTEGER NOT NULL);
    """,
    "ALTER TABLE acks ADD COLUMN session TEXT NOT NULL DEFAULT ''",
    """
    CREATE TABLE quarantine(
        id INTEGER PRIMARY KEY,
        line BLOB NOT NULL,
        lane TEXT NOT NULL,
        key BLOB NOT NULL,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    ALTER TABLE inbox ADD COLUMN internal INTEGER NOT NULL DEFAULT 0
    """,
]

OLD_WATCH = [
    """
    CREATE TABLE sources(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, root BLOB NOT NULL);
    CREATE TABLE files(
        key BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        batch INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('last_batch', 0), ('written_batch', 0);
    """,
    "CREATE TABLE acks(reader TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, "
    "session TEXT NOT NULL DEFAULT '');"
    "INSERT INTO meta VALUES ('epoch', abs(random()) % 9007199254740991), ('tombstones', 0);",
]


def _old_file(path: Path, migrations: list[str], upto: int) -> sqlite3.Connection:
    """The user_version mechanism as it was (state.migrate before this change)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for number in range(upto):
        db.executescript("BEGIN IMMEDIATE;" + migrations[number] + f";PRAGMA user_version={number + 1};COMMIT;")
    return db


def _old_stage_part(db: sqlite3.Connection, name: str, migrations: list[str], upto: int) -> None:
    """The second mechanism as it was (StageState._migrate_named): statements split on ';', schema_versions."""
    for number in range(upto):
        db.execute("BEGIN IMMEDIATE")
        for stmt in [s.strip() for s in migrations[number].split(";") if s.strip()]:
            db.execute(stmt)
        db.execute(
            "INSERT INTO schema_versions(name, version) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET version=excluded.version",
            (name, number + 1),
        )
        db.execute("COMMIT")


def _schema(path: Path) -> dict[str, list[tuple]]:
    """Every table's columns (name, type, not null, default, primary key) and every index, by name."""
    db = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple]] = {}
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            out[name] = [tuple(row[1:]) for row in db.execute(f"PRAGMA table_info({name})")]
        out["indexes"] = db.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
        return out
    finally:
        db.close()


@pytest.mark.parametrize("delivery", [1, 2, 3])
@pytest.mark.parametrize("own", [0, 1, 2])
def test_a_stage_state_written_by_the_old_code_opens_and_ends_like_a_new_one(
    tmp_path: Path, delivery: int, own: int
) -> None:
    old = tmp_path / "old.db"
    db = _old_file(old, OLD_STAGE, delivery)
    _old_stage_part(db, "fc-process", [m for m in PROCESS_MIGRATIONS if isinstance(m, str)], own)
    db.execute("INSERT INTO outbox(seq, line) VALUES (7, x'7b7d0a')")
    db.execute("INSERT INTO acks(reader, epoch, seq, at) VALUES ('/r.db', 'e', 5, 1.0)")
    (epoch,) = db.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()
    db.close()

    with StageState(old, PROCESS_MIGRATIONS, name="fc-process") as st:
        assert st.epoch == epoch  # the same state, not a new one
        assert st.next_seq == 8
        assert st.db.execute("SELECT reader, seq, session FROM acks").fetchall() == [("/r.db", 5, "")]
        # a reader from before end-to-end acknowledgements said no through: read as its seq (acks.throughs)
        assert st.db.execute("SELECT through FROM acks").fetchall() == [(None,)]
    StageState(tmp_path / "new.db", PROCESS_MIGRATIONS, name="fc-process").close()
    assert _schema(old) == _schema(tmp_path / "new.db")
    # and opening again runs nothing twice
    with StageState(old, PROCESS_MIGRATIONS, name="fc-process") as st:
        assert st.db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


@pytest.mark.parametrize("upto", [1, 2])
def test_a_watch_state_written_by_the_old_code_opens_and_ends_like_a_new_one(tmp_path: Path, upto: int) -> None:
    old = tmp_path / "old.db"
    db = _old_file(old, OLD_WATCH, upto)
    db.execute("INSERT INTO files VALUES (x'0000000161', 1, 2, 3, 99, 4)")
    db.close()
    ws = WatchState(old)
    try:
        assert ws.db.execute("SELECT key, size FROM files").fetchall() == [(b"\0\0\0\x01a", 1)]
        assert ws.epoch  # given by the migration that added hops
    finally:
        ws.close()
    WatchState(tmp_path / "new.db").close()
    assert _schema(old) == _schema(tmp_path / "new.db")


def test_a_function_migration_that_fails_leaves_the_previous_version(tmp_path: Path) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half(x)")
        raise RuntimeError("a bug in a migration")

    p = tmp_path / "s.db"
    with pytest.raises(RuntimeError):
        State(p, ["CREATE TABLE a(x)", broken])
    db = sqlite3.connect(p)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert db.execute("SELECT name FROM sqlite_master WHERE name='half'").fetchone() is None


def test_a_part_counts_apart_and_a_newer_part_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    State(p, ["CREATE TABLE a(x)"], parts={"mine": ["CREATE TABLE b(y)", "CREATE TABLE c(z)"]}).close()
    db = sqlite3.connect(p)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert db.execute("SELECT version FROM schema_versions WHERE name='mine'").fetchone() == (2,)
    db.close()
    with pytest.raises(StateError, match=r"newer.*mine schema 2"):
        State(p, ["CREATE TABLE a(x)"], parts={"mine": ["CREATE TABLE b(y)"]})
