"""Quarantine (issue 16): a stored event a stage cannot commit, for a reason that is not the destination's (a
bug in the stage), is tried a few times, then set aside in the quarantine table instead of crashing the stage
(exit 5) on every round and every restart.  Real runner, real state file, a stage written for the test."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.delivery import quarantine
from fileconveyor.delivery.runner import Done, Item, Options, Runner, Stage
from fileconveyor.report import Reporter
from fileconveyor.stages.record.status import state_status
from fileconveyor.stopping import Stopper


class Buggy(Stage):
    """Passes events on; its bookkeeping raises for one path, as a buggy plugin's would."""

    name = "fc-buggy"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.calls: dict[str, int] = {}

    def lanes(self) -> dict[str, int]:
        return {"": self.workers}

    def work(self, item: Item) -> Done:
        return Done([item.event])

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        rel = item.event["rel"]
        self.calls[rel] = self.calls.get(rel, 0) + 1
        if rel == "bad.css":
            raise OverflowError("Python int too large to convert to SQLite INTEGER")


def _lines(*rels: str) -> bytes:
    return b"".join(E.encode({"v": 1, "kind": "created", "root": "/r", "path": f"/r/{r}", "rel": r}) for r in rels)


def _run(stage: Stage, data: bytes, state: Path) -> tuple[int, list[str], str]:
    out, err = io.BytesIO(), io.StringIO()
    runner = Runner(
        stage, Options(state_path=state, drain_timeout=10), io.BytesIO(data), out, Reporter("fc-t", err, 1), Stopper()
    )
    status = runner.run()
    return status, [E.decode(x)["rel"] for x in out.getvalue().splitlines()], err.getvalue()


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "workers"])
def test_an_item_whose_commit_keeps_failing_is_set_aside(tmp_path: Path, workers: int) -> None:
    stage, state = Buggy(workers), tmp_path / "s.db"
    status, out, err = _run(stage, _lines("a.css", "bad.css", "b.css", "c.css"), state)
    assert status == 1, err  # some event failed: 1, never 5
    assert sorted(out) == ["a.css", "b.css", "c.css"]
    # each attempt: in its round's commit, then alone in a savepoint once that failed
    assert quarantine.QUARANTINE_AFTER <= stage.calls["bad.css"] <= 2 * quarantine.QUARANTINE_AFTER
    assert f"set aside after {quarantine.QUARANTINE_AFTER} attempts" in err
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
        ((line, reason),) = db.execute("SELECT line, reason FROM quarantine").fetchall()
    assert E.decode(line)["rel"] == "bad.css" and "OverflowError" in reason
    assert state_status(str(state))["quarantined"] == 1
    # not retried for ever: the next run has nothing left to do
    again = Buggy(workers)
    assert _run(again, b"", state)[0] == 0
    assert "bad.css" not in again.calls


def test_a_stage_bug_retried_in_time_is_not_set_aside(tmp_path: Path) -> None:
    """An item that fails once and then goes through (a passing problem) stays in the stream."""

    class Once(Buggy):
        def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
            rel = item.event["rel"]
            self.calls[rel] = self.calls.get(rel, 0) + 1
            if rel == "bad.css" and self.calls[rel] == 1:
                raise ValueError("once")

    status, out, err = _run(Once(0), _lines("a.css", "bad.css"), tmp_path / "s.db")
    assert status == 0, err
    assert sorted(out) == ["a.css", "bad.css"]
