"""fc-record's ``servers_seen`` when a round's commit is rolled back and redone item by item (a stage's bug on
one item: delivery/quarantine.py).  record() (now recorded(), once a round) took the servers first seen in the
round out of memory and wrote them; rolled back, they were neither in the table nor in memory any more, so the
next start did not know them, and ``--delete-source-after`` without ``--require-server`` then waited for fewer
servers than had been seen (a source deleted before its copy reached them all).  Now they are given back
(on_rollback) and written by the redo.  Real runner, real fc-record and its database, real state file; the only
thing made up is the bug."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

from fileconveyor.delivery.runner import Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.record.stage import RecordStage
from fileconveyor.stopping import Stopper

N = 12


class BuggyOnce(RecordStage):
    """fc-record whose bookkeeping raises once, after the recorded() of a round that wrote new servers."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(str(db_path))
        self.raised = False

    def recorded(self, db: sqlite3.Connection) -> None:
        due = not self.raised and bool(self.new_servers)
        super().recorded(db)
        if due:
            self.raised = True
            raise OverflowError("a bug in the stage's bookkeeping")


def test_a_redone_commit_keeps_the_servers_seen(tmp_path: Path) -> None:
    state = tmp_path / "r.db"
    evs = []
    for i in range(N):
        server = f"s{i % 3}"
        path = f"/site/f{i}.css"
        evs.append(
            {"v": 1, "kind": "created", "path": path, "rel": f"f{i}.css", "server": server, "url": f"http://x/{i}"}
        )
    data = b"".join(json.dumps(ev).encode() + b"\n" for ev in evs)
    stage = BuggyOnce(tmp_path / "synced.db")
    out, err = io.BytesIO(), io.StringIO()
    status = Runner(stage, Options(state_path=state), io.BytesIO(data), out, Reporter("fc-r", err, 1), Stopper()).run()
    assert stage.raised, "no round wrote new servers: the test proved nothing"
    assert status == 0, err.getvalue()
    assert len(out.getvalue().splitlines()) == N
    with contextlib.closing(sqlite3.connect(state)) as db:
        seen = sorted(s for (s,) in db.execute("SELECT server FROM servers_seen"))
    assert seen == ["s0", "s1", "s2"]  # what the next start requires a file on before deleting its source
