"""What work() did reaches the commit with its outcome (``Done.payload``), so a round's commit that is rolled
back and redone item by item (a stage's bug on one item: delivery/quarantine.py) still writes every other
item's rows.  It used to travel in a side dictionary keyed by id(item), emptied by the first try: the items
recorded before the faulty one lost their remote_names rows.  Real runner, real fc-transport to a local folder,
real state file; the only thing made up is the bug."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.runner import Done, Item, Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stopping import Stopper

from .conftest import event, jsonl

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
