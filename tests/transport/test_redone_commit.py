"""What work() did reaches the commit with its outcome (``Done.payload``), so a round's commit that is rolled
back and redone item by item (a stage's bug on one item: delivery/quarantine.py) still writes every other
item's rows.  It used to travel in a side dictionary keyed by id(item), emptied by the first try: the items
recorded before the faulty one lost their remote_names rows.  Real runner, real fc-transport to a local folder,
real state file; the only thing made up is the bug."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.runner import Done, Item, Options, Runner
from fileconveyor.errors import Exit
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import Note, TransportStage
from fileconveyor.stopping import Stopper

from .conftest import FaultAfter, event, jsonl

N = 60


class BuggyOnce(TransportStage):
    """fc-transport whose bookkeeping raises once, for the second item of a round (so one item of the round was
    recorded before it)."""

    def __init__(self, dest: Path) -> None:
        super().__init__(targets_from([("to", f"file://{dest}?connections=2")]))
        self.in_round = 0
        self.raised = False

    def flush(self) -> str | None:  # once per round, before its commit
        self.in_round = 0
        return super().flush()

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        self.in_round += 1
        if self.in_round == 2 and not self.raised:
            self.raised = True
            raise OverflowError("a bug in the stage's bookkeeping")
        super().record(db, item, outcome)


def test_a_redone_commit_writes_every_items_rows(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    for n in range(N):
        (src / f"f{n}.txt").write_bytes(b"x" * n)
    data = jsonl([event(src, f"f{n}.txt") for n in range(N)])
    stage = BuggyOnce(dest)
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=state, drain_timeout=10)
    status = Runner(stage, opts, io.BytesIO(data), out, Reporter("fc-t", err, 1), Stopper()).run()
    assert stage.raised, "no round recorded two items: the test proved nothing"
    assert status == 0, err.getvalue()
    sent = sorted(E.decode(line)["rel"] for line in out.getvalue().splitlines())
    assert sent == sorted(f"f{n}.txt" for n in range(N))
    with sqlite3.connect(state) as db:
        rows = {bytes(p).decode() for (p,) in db.execute("SELECT path FROM remote_names")}
    # every file uploaded has the row that says under which name (what a later deletion or rename needs)
    assert sorted(rows) == sorted(str(src / f"f{n}.txt") for n in range(N))


# -- what record() does outside the state file, when its transaction is rolled back and redone ------------------
# The threads of fc-transport (delayed deletions of old names, CDN invalidations) learn of the rows a commit
# wrote only once it is in (StageContext.after_commit), and get back the finished rows whose DELETE it rolled
# back (on_rollback).  Handed over at once, the deleter got the same old name twice, under an id the rollback
# had undone, and the finished rows were forgotten while their DELETE was undone: they stayed in the table and
# their work was done again by the next start.


def _superseding(stage: TransportStage, outcome: Done) -> bool:
    return isinstance(outcome.payload, Note) and outcome.payload.superseded is not None


def _ids(state: Path, table: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(state)) as db:
        return sorted(i for (i,) in db.execute(f"SELECT id FROM {table}"))


def _dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The source, the destination (both made) and the state file of a test."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    return src, dest, tmp_path / "t.db"


def test_a_redone_commit_hands_each_old_name_to_the_deleter_once(tmp_path: Path) -> None:
    src, dest, state = _dirs(tmp_path)
    n = 20
    for i in range(n):
        (src / f"f{i}.txt").write_bytes(b"x" * i)
    # each file under a first name, then under a second one: the first is old, deleted an hour later
    evs = [event(src, f"f{i}.txt", name=f"f{i}.1.txt") for i in range(n)]
    evs += [event(src, f"f{i}.txt", "modified", name=f"f{i}.2.txt") for i in range(n)]
    stage = FaultAfter(f"file://{dest}?connections=2", _superseding, delete_old_after=3600)
    err = io.StringIO()
    opts = Options(state_path=state, drain_timeout=1)
    status = Runner(stage, opts, io.BytesIO(jsonl(evs)), io.BytesIO(), Reporter("fc-t", err, 1), Stopper()).run()
    assert stage.raised, "no old name was recorded: the test proved nothing"
    assert status == Exit.RETRY, err.getvalue()  # the deletions wait for their hour, in the table
    rows = _ids(state, "old_deletions")
    assert len(rows) == n
    assert stage.old is not None
    # the deleter holds each row once, by its real id (a duplicate deleted the name twice, under an undone id)
    assert sorted(p.row for _, _, p in stage.old.heap) == rows


def test_a_redone_commit_keeps_the_deletion_of_finished_rows(tmp_path: Path) -> None:
    src, dest, state = _dirs(tmp_path)
    n = 10
    for i in range(n):
        (src / f"a{i}.txt").write_bytes(b"a" * i)
        (src / f"b{i}.txt").write_bytes(b"b" * i)
    (src / "c.txt").write_bytes(b"c")
    # a{i} is sent as n{i}, then as m{i}: n{i} is old, to delete 0.3 s later; but b{i} is sent as n{i} too,
    # so the deleter finds it in use, and the row is finished without a deletion: removed by the next commit
    stage = FaultAfter(f"file://{dest}?connections=2", lambda st, _: bool(st.old and st.old.done), delete_old_after=0.3)
    r, w = os.pipe()
    err = io.StringIO()
    opts = Options(state_path=state, drain_timeout=10)
    with open(r, "rb", buffering=0) as stdin:
        runner = Runner(stage, opts, stdin, io.BytesIO(), Reporter("fc-t", err, 1), Stopper())
        status: list[int] = []
        thread = threading.Thread(target=lambda: status.append(runner.run()))
        thread.start()
        try:
            first = [event(src, f"a{i}.txt", name=f"n{i}.txt") for i in range(n)]
            os.write(w, jsonl(first + [event(src, f"b{i}.txt", name=f"n{i}.txt") for i in range(n)]))
            _until(lambda: _count(state, "remote_names") == 2 * n)
            os.write(w, jsonl([event(src, f"a{i}.txt", "modified", name=f"m{i}.txt") for i in range(n)]))
            _until(lambda: stage.old is not None and len(stage.old.done) == n)
            assert _ids(state, "old_deletions"), "no row waits for its deletion: the test proves nothing"
            os.write(w, jsonl([event(src, "c.txt")]))  # its commit removes the finished rows, and is redone
        finally:
            os.close(w)
            thread.join(30)
    assert stage.raised, "no commit took finished rows: the test proved nothing"
    assert status == [0], err.getvalue()
    assert _ids(state, "old_deletions") == []  # each finished, none to do again at the next start
    assert sorted(os.listdir(dest)) == sorted(
        [*(f"n{i}.txt" for i in range(n)), *(f"m{i}.txt" for i in range(n)), "c.txt"]
    )


def _count(state: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(state)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
