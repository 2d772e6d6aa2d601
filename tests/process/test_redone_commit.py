"""fc-process's work directory reaches the commit with the outcome (``Done.payload``): a round's commit rolled
back and redone item by item (a bug on one item: delivery/quarantine.py) still writes the work_files row of
every processed copy.  Through a side dictionary emptied by the first try, the items recorded before the
faulty one lost their rows, and the next start removed their directories as left by a kill, while the next
stage still had to send those files.  Real runner, real minify.CSS chain, real state file; the bug is made up."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.runner import Done, Item, Options, Runner
from fileconveyor.processors.minify import CSS
from fileconveyor.report import Reporter
from fileconveyor.stages.process.stage import ProcessStage, Settings
from fileconveyor.stopping import Stopper

N = 40


class BuggyOnce(ProcessStage):
    """fc-process whose bookkeeping raises once, for the second item of a round."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__([CSS()], Settings(jobs=2, work_dir=str(work_dir)))
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


def _event(root: Path, rel: str) -> bytes:
    path = root / rel
    st = path.stat()
    ev = {"v": 1, "kind": "created", "source": "site", "root": str(root), "path": str(path), "rel": rel}
    ev.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino)
    return E.encode(ev)


def test_a_redone_commit_keeps_every_processed_copy(tmp_path: Path) -> None:
    src, work, state = tmp_path / "src", tmp_path / "work", tmp_path / "p.db"
    src.mkdir()
    work.mkdir()
    for n in range(N):
        (src / f"s{n}.css").write_bytes(b"a  {\n   color :  red ;\n}\n" * (n + 1))
    data = b"".join(_event(src, f"s{n}.css") for n in range(N))
    stage = BuggyOnce(work)
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=state, drain_timeout=10)
    status = Runner(stage, opts, io.BytesIO(data), out, Reporter("fc-t", err, 1), Stopper()).run()
    assert stage.raised, "no round recorded two items: the test proved nothing"
    assert status == 0, err.getvalue()
    files = [E.get_path(E.decode(line), "file") for line in out.getvalue().splitlines()]
    assert len(files) == N and all(os.path.exists(f) for f in files)
    with sqlite3.connect(state) as db:
        (rows,) = db.execute("SELECT count(*) FROM work_files WHERE current=1").fetchone()
    assert rows == N  # every processed copy is known: kept until a newer version or the reader is done
    # a restart (nothing new to read) removes only directories no row knows of: none of these
    again = ProcessStage([CSS()], Settings(jobs=2, work_dir=str(work)))
    assert Runner(again, opts, io.BytesIO(b""), io.BytesIO(), Reporter("fc-t", io.StringIO(), 1), Stopper()).run() == 0
    assert all(os.path.exists(f) for f in files)
