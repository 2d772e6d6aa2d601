"""fc-record writes a round of events in one transaction of the synced-files database (issue 18), and keeps its
guarantees: a kill between that commit and the state file's commit replays to the same rows, and a round whose
records cannot be committed (a full disk) is done again, not passed on as recorded."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor import records as records_mod
from fileconveyor.cli import record as record_cli
from fileconveyor.delivery import commit as commit_mod
from tests.conftest import ROOT, call
from tests.durability.test_disk_full import require_namespaces
from tests.record.conftest import make_site, record, transport, watch
from tests.record.test_concurrency import _events

N = 1000


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT input_file, transported_file_basename, url, server, size, mtime_ns, ino FROM synced_files "
            "ORDER BY input_file"
        ).fetchall()
    finally:
        con.close()


def _expected(n: int) -> list[tuple]:
    rows = []
    for i in range(n):
        rel = f"d{i % 50}/f{i}.css"
        rows.append((f"/srv/www/{rel}", f"f{i}.css", f"https://cdn.example/{rel}", "cdn", i, 10**18 + i, i))
    return sorted(rows)


def test_a_round_of_events_is_one_commit_not_one_per_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[str] = []
    connect = records_mod.Records._connect

    def traced(path: Path) -> sqlite3.Connection:
        db = connect(path)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(records_mod.Records, "_connect", staticmethod(traced))
    db = tmp_path / "synced_files.db"
    data = _events(N)
    res = record(db, [], tmp_path / "r.db")  # create the file first: its migrations are not the point here
    assert res.status == 0, res.stderr
    statements.clear()
    res = call(record_cli.main, ["--db", str(db), "--state", str(tmp_path / "r.db")], data)
    assert res.status == 0, res.stderr
    assert _rows(db) == _expected(N)
    commits = sum(1 for s in statements if s.strip().upper() == "COMMIT")
    begins = sum(1 for s in statements if s.strip().upper().startswith("BEGIN"))
    # 1,000 lines arrive in one or a few rounds (runner.BATCH is 2,000); before: one BEGIN/COMMIT per event
    assert 1 <= commits <= 10 and begins == commits, (begins, commits)
    # 1 per event, the upsert: while sync_failures and source_deletions are empty at the start of a round,
    # nothing is looked up or cleared in them (before: 5 per event, BEGIN and COMMIT among them), and a record
    # that is one statement needs no savepoint around it (before: 3 per event, SAVEPOINT and RELEASE)
    assert len(statements) < 1.1 * N, len(statements)


class _Counted:
    """A connection that counts the calls made to it (a sqlite3.Connection's methods cannot be replaced)."""

    def __init__(self, db: sqlite3.Connection, calls: list[str]):
        self._db, self._calls = db, calls

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._db, name)
        if name in ("execute", "executemany"):
            self._calls.append(name)
        return attr


def test_a_rounds_synced_rows_are_written_by_one_call_not_one_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual record (a synced file's upsert alone) is gathered and written with the round's others in one
    executemany: a call into sqlite3 per event, and its Python around it, cost more than the row itself."""
    calls: list[str] = []
    connect = records_mod.Records._connect
    monkeypatch.setattr(records_mod.Records, "_connect", staticmethod(lambda path: _Counted(connect(path), calls)))
    db = tmp_path / "synced_files.db"
    res = record(db, [], tmp_path / "r.db")
    assert res.status == 0, res.stderr
    calls.clear()
    res = call(record_cli.main, ["--db", str(db), "--state", str(tmp_path / "r.db")], _events(N))
    assert res.status == 0, res.stderr
    assert _rows(db) == _expected(N)
    # a few rounds: each a BEGIN, two looks at the skippable tables, a savepoint and its release, a COMMIT
    assert calls.count("execute") < 60 and 1 <= calls.count("executemany") <= 10, calls


def test_a_rounds_gathered_rows_are_written_before_a_later_event_of_their_file(tmp_path: Path) -> None:
    """Rows gathered for one statement are written before an event that is not a plain upsert changes the same
    rows in the same round: a deletion after the upload removes the row, a failure after it leaves the row."""
    db = tmp_path / "synced_files.db"
    good = [json.loads(x) for x in _events(4).splitlines()]
    gone = {**good[1], "kind": "deleted", "id": "d" * 32, "transported": "deleted"}
    failed = {**good[2], "id": "f" * 32, "error": "upload failed", "transported": "failed"}
    data = b"".join(E.encode(e) for e in [*good, gone, failed])
    res = call(record_cli.main, ["--db", str(db), "--state", str(tmp_path / "r.db")], data)
    assert res.status == 1, res.stderr  # the failed event
    assert [r[0] for r in _rows(db)] == ["/srv/www/d0/f0.css", "/srv/www/d2/f2.css", "/srv/www/d3/f3.css"]
    con = sqlite3.connect(db)
    assert con.execute("SELECT input_file FROM sync_failures").fetchall() == [("/srv/www/d2/f2.css",)]


def test_a_record_that_fails_alone_leaves_the_rounds_other_records(tmp_path: Path) -> None:
    """The usual record, one upsert, runs without a savepoint: when that statement fails (here a trigger refuses
    one file), SQLite undoes it alone; that event fails, and the other records of its round are committed."""
    db = tmp_path / "synced_files.db"
    res = record(db, [], tmp_path / "r.db")
    assert res.status == 0, res.stderr
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON synced_files WHEN NEW.input_file = '/srv/www/d3/f3.css'"
        " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    )
    con.commit()
    con.close()
    res = call(record_cli.main, ["--db", str(db), "--state", str(tmp_path / "r.db")], _events(10))
    assert res.status == 1 and "refused by a trigger" in res.stderr, res.stderr
    assert [r[0] for r in _rows(db)] == sorted(f"/srv/www/d{i}/f{i}.css" for i in range(10) if i != 3)
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert [o["rel"] for o in out if "error" in o] == ["d3/f3.css"] and len(out) == 10


def test_a_kill_after_the_records_commit_and_before_the_state_commit_replays_to_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash window between the two databases: the synced-files rows are committed, the state file does not
    know it; the events come again and the rows end up exactly as after one clean run."""
    db, state = tmp_path / "synced_files.db", tmp_path / "r.db"
    data = _events(N)
    snapshot = commit_mod.Commit._snapshot

    class Killed(BaseException):
        pass

    def killed(self: commit_mod.Commit, *args: object) -> object:
        # runs right after Stage.flush, before the state file's transaction: what kill -9 would leave there
        raise Killed

    monkeypatch.setattr(commit_mod.Commit, "_snapshot", killed)
    with pytest.raises(Killed):
        call(record_cli.main, ["--db", str(db), "--state", str(state)], data)
    first = _rows(db)
    assert 0 < len(first) <= N  # the round's rows were committed before the "kill"
    monkeypatch.setattr(commit_mod.Commit, "_snapshot", snapshot)
    res = call(record_cli.main, ["--db", str(db), "--state", str(state)], data)
    assert res.status == 0, res.stderr
    assert _rows(db) == _expected(N)
    (n,) = sqlite3.connect(db).execute("SELECT count(*) FROM synced_files").fetchone()
    assert n == N  # upserts: no second row for a replayed event


def test_a_full_disk_under_the_records_retries_the_round_and_loses_nothing(tmp_path: Path) -> None:
    """The synced-files database on a tmpfs that fills up: its commit fails, the round's items are retried (not
    passed on as recorded), and every row is there once space returns."""
    require_namespaces()
    small = tmp_path / "small"
    small.mkdir()
    (tmp_path / "in.ndjson").write_bytes(_events(3000))
    out = tmp_path / "out.ndjson"
    rec = f"{sys.executable} {ROOT / 'bin' / 'fc-record'}"
    script = f"""
    set -u
    mount -t tmpfs -o size=200k tmpfs {small}
    {rec} --db {small}/synced_files.db --state {tmp_path}/r.db --input {tmp_path}/in.ndjson \\
      --output {out} 2> {tmp_path}/r.err &
    pid=$!
    sleep 4
    echo "while-full=$(wc -l < {out} 2>/dev/null || echo 0)"
    mount -o remount,size=20m {small}
    wait $pid
    echo "status=$?"
    {sys.executable} -c "import sqlite3; c = sqlite3.connect('{small}/synced_files.db'); \
      print('rows=%d' % c.execute('SELECT count(*) FROM synced_files').fetchone())"
    """
    r = subprocess.run(["unshare", "-Urm", "bash", "-c", script], capture_output=True, text=True, timeout=240)
    err = (tmp_path / "r.err").read_text()
    report = r.stdout + r.stderr + err
    assert "status=0" in report, report
    assert int(report.split("while-full=")[1].split()[0]) < 3000, report  # it really was stuck on space
    assert "Traceback" not in err, err
    out_lines = out.read_bytes().splitlines()
    assert len(out_lines) == 3000 and not [x for x in out_lines if b'"error"' in x], report
    assert "rows=3000" in report, report


def test_a_failure_and_then_a_success_in_one_round_leave_no_failure_row(tmp_path: Path) -> None:
    """fc-record skips clearing sync_failures while the table is empty; a failure written earlier in the same
    round must still be cleared by the file's later success."""
    db = tmp_path / "synced_files.db"
    good = [json.loads(x) for x in _events(3).splitlines()]
    bad = [{**e, "id": "f" + e["id"][1:], "error": "upload failed", "transported": "failed"} for e in good]
    data = b"".join(E.encode(e) for e in [*bad, *good, bad[2]])
    res = call(record_cli.main, ["--db", str(db), "--state", str(tmp_path / "r.db")], data)
    assert res.status == 1, res.stderr  # the failed events are failures
    con = sqlite3.connect(db)
    failures = con.execute("SELECT input_file FROM sync_failures ORDER BY input_file").fetchall()
    assert failures == [("/srv/www/d2/f2.css",)]  # only the file whose last event failed
    assert len(_rows(db)) == 3


def test_a_deletion_scheduled_and_cancelled_in_one_round_leaves_no_schedule(tmp_path: Path) -> None:
    """source_deletions is empty when the round begins; the schedule fc-record writes for the first event must
    still be found (and dropped) by the user's deletion later in the same round."""
    site = make_site(tmp_path)
    db = tmp_path / "s.db"
    (a,) = [e for e in watch(site, tmp_path / "w.db") if e["rel"] == "css/a.css"]
    gone = {k: v for k, v in a.items() if k not in ("size", "mtime_ns", "ino")}
    gone.update(kind="deleted", id="d" * 32)
    stream = transport([a], None, "cdn") + transport([gone], None, "cdn")
    res = record(db, stream, tmp_path / "r.db", "--source", f"site={site}", "--delete-source-after", "3600",
                 "--require-server", "cdn", "--drain-timeout", "0")  # fmt: skip
    assert res.status == 0, res.stderr
    assert (site / "css" / "a.css").exists()  # not due yet, and cancelled
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM source_deletions").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM synced_files").fetchone() == (0,)
