"""fc-transport killed after an upload and before its commit: the restarted process finds the item in its inbox
and used to send it again (the chaos run's duplicate uploads, issue 18).  Now, where the transporter can tell
(``skip_unchanged``: file://, S3, Cloud Files), it looks at the destination first: the same bytes there are not
sent again (``"transported": "unchanged"``); different bytes (the killed process had not sent them yet) are.
The same for small files to a local folder, which the runner's main thread copies before the commit that takes
their lines (no inbox row, stages/transport/turns.py): their writer sends the lines again, and they come back as
recovered work.  Real runner, real fc-watch, real fc-transport to a local folder, real state file; the kill is a
real ``_exit`` of a forked process between the upload and the commit."""

from __future__ import annotations

import io
import multiprocessing
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.delivery.durable import StageState
from fileconveyor.delivery.intake import WORKING_AHEAD
from fileconveyor.delivery.runner import Done, Item, Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stages.transport.turns import TURN_MAX_SIZE
from fileconveyor.stopping import Stopper

from .conftest import event, fc, jsonl


class KilledBeforeCommit(TransportStage):
    """fc-transport that dies like ``kill -9`` when it would record its first round (uploads done)."""

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        os._exit(137)


def run(stage: TransportStage, state: Path, data: bytes) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=state, drain_timeout=10)
    status = Runner(stage, opts, io.BytesIO(data), out, Reporter("fc-t", err, 1), Stopper()).run()
    return status, out.getvalue(), err.getvalue()


def killed_at_first_commit(spec: list[tuple[str, str]], state: Path, data: bytes) -> None:
    """fc-transport (a forked process) fed ``data``, killed like ``kill -9`` when it would record its first round."""
    child = multiprocessing.get_context("fork").Process(
        target=run, args=(KilledBeforeCommit(targets_from(spec)), state, data)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 137


def test_an_upload_done_but_not_recorded_is_not_sent_again(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    for name in ("same.txt", "other.txt"):
        # large enough for a worker thread (turns.py): its item has an inbox row before the upload
        (src / name).write_bytes(name.encode() * (TURN_MAX_SIZE // 8))
    spec = [("to", f"file://{dest}?connections=1")]  # one worker: same.txt is sent before the first commit
    data = jsonl([event(src, "same.txt"), event(src, "other.txt")])
    killed_at_first_commit(spec, state, data)
    assert (dest / "same.txt").read_bytes() == (src / "same.txt").read_bytes(), "the killed process uploaded nothing"
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (2,)  # nothing recorded as done
    (dest / "other.txt").write_bytes(b"an older version")  # as if the kill came before this one was sent
    before = (dest / "same.txt").stat().st_ino

    status, out, err = run(TransportStage(targets_from(spec)), state, b"")
    assert status == 0, err
    sent = {ev["rel"]: ev["transported"] for ev in map(E.decode, out.splitlines())}
    assert sent == {"same.txt": "unchanged", "other.txt": "uploaded"}
    assert (dest / "same.txt").stat().st_ino == before  # not written again
    assert (dest / "other.txt").read_bytes() == (src / "other.txt").read_bytes()
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM remote_names").fetchone() == (2,)


def test_a_small_copy_made_at_once_but_not_recorded_is_not_made_again(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    names = [f"f{i}.txt" for i in range(6)]
    for name in names:
        (src / name).write_bytes(name.encode() * 100)
    # lines with the hop of a real writer: what the killed process took, its writer sends again
    scan = [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(src)]
    data = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    spec = [("to", f"file://{dest}")]
    killed_at_first_commit(spec, state, data)
    assert sorted(p.name for p in dest.iterdir()) == names, "the killed process copied them all"
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (0,)  # copied at once: no inbox rows
        assert db.execute("SELECT coalesce(max(hwm), 0) FROM upstream").fetchone() == (0,)  # nor the lines taken
    (dest / "f1.txt").write_bytes(b"an older version")  # as if the kill came before this one was copied
    inodes = {name: (dest / name).stat().st_ino for name in names}

    status, out, err = run(TransportStage(targets_from(spec)), state, data)
    assert status == 0, err
    sent = {ev["rel"]: ev["transported"] for ev in map(E.decode, out.splitlines())}
    assert sent == {name: "uploaded" if name == "f1.txt" else "unchanged" for name in names}
    assert {name: (dest / name).stat().st_ino for name in names if name != "f1.txt"} == {
        name: ino for name, ino in inodes.items() if name != "f1.txt"
    }, "not written again"
    assert all((dest / name).read_bytes() == (src / name).read_bytes() for name in names)

    # the next lines of that writer: copied (looked at first while within WORKING_AHEAD of the mark)
    (src / "f0.txt").write_bytes(b"new content")
    (src / "f9.txt").write_bytes(b"x")
    data = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    status, out, err = run(TransportStage(targets_from(spec)), state, data)
    assert status == 0, err
    sent = {ev["rel"]: ev["transported"] for ev in map(E.decode, out.splitlines())}
    assert sent == {"f0.txt": "uploaded", "f9.txt": "uploaded"}
    assert (dest / "f0.txt").read_bytes() == b"new content" and (dest / "f9.txt").read_bytes() == b"x"
    with sqlite3.connect(state) as db:  # a clean end leaves no intended name (the killed process's: all used)
        assert db.execute("SELECT count(*) FROM intended").fetchone() == (0,)


def test_the_working_mark_reaches_ahead_of_the_lines_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark goes WORKING_AHEAD seqs beyond the round's lines: one line per round (a live stream) costs no
    transaction of its own for it, only the round's commit.  At a clean end it comes back to the lines taken:
    left ahead, the next run's first lines came as recovered (a file touched with the same bytes was reported
    unchanged, not sent: tests/examples/test_pipelines.py::test_cron_sync_sends_only_what_changed)."""
    saved: list[dict] = []
    real = StageState.save_working
    monkeypatch.setattr(
        StageState, "save_working", lambda self, db, marks: (saved.append(dict(marks)), real(self, db, marks))[1]
    )
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    scan = [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(src)]
    first = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    (src / "b.txt").write_bytes(b"b")
    second = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, _, err = run(stage, state, first + second)
    assert status == 0, err
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "b.txt"]
    with sqlite3.connect(state) as db:
        (origin, seq), *more = db.execute("SELECT origin, seq FROM working").fetchall()
    assert not more and origin == str(tmp_path / "w.db")
    assert [m[origin][1] for m in saved] == [1 + WORKING_AHEAD, 2], "ahead once, for the first line; back at the end"
    assert seq == 2


def test_a_fresh_event_is_sent_even_when_the_destination_holds_it(tmp_path: Path) -> None:
    """Only recovered work is looked at first: without --skip-unchanged a new event is sent as before."""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    (src / "a.txt").write_bytes(b"a")
    (dest / "a.txt").write_bytes(b"a")
    status, out, err = run(
        TransportStage(targets_from([("to", f"file://{dest}")])), state, jsonl([event(src, "a.txt")])
    )
    assert status == 0, err
    assert [E.decode(line)["transported"] for line in out.splitlines()] == ["uploaded"]


@pytest.mark.parametrize("comes_again", ["created-then-deleted", "deleted-only"])
def test_an_upload_not_recorded_then_deleted_at_the_source_is_deleted(tmp_path: Path, comes_again: str) -> None:
    """Killed after its copies and before its commit, then the files deleted at the source: the restarted process
    cannot send them again (gone) and knew no name for them, so their deletions deleted nothing (a deletion removes
    only a name File Conveyor put there: tests/security/test_unknown_deletions.py) and the copies stayed at the
    destination for good (the chaos run's "extra").

    created-then-deleted: the created lines come again, then the deletions; a recovered item whose file is gone
    names what the killed process may have put there, and the deletion that follows removes it.
    deleted-only: as fc-watch really re-sends, from its rows, one per file with its last event, so a file created
    and then deleted comes again as its deletion alone, never as the created line the killed process took (`make
    chaos`'s conveyor run: 2 copies left in rule 'all', "not deleted from copy: no upload of it is known").  The
    names the round was about to upload are committed before its copies (``intended``), so the restarted process
    deletes what the killed one may have put there, and nothing else: a forged deletion of admin.html (no round
    intended it) deletes nothing."""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    (dest / "admin.html").write_bytes(b"not ours")
    names = ["a.txt", "b.txt"]
    for name in names:
        (src / name).write_bytes(name.encode() * 100)
    scan = [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(src)]
    data = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    spec = [("to", f"file://{dest}?connections=1")]
    killed_at_first_commit(spec, state, data)
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "admin.html", "b.txt"]
    for name in names:
        (src / name).unlink()
    gone = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    if comes_again == "created-then-deleted":
        lines = data + gone  # the lines its writer sends again (their files gone), then the deletions
    else:
        gone = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout  # a replay of the rows
        assert [E.decode(line)["kind"] for line in gone.splitlines()] == ["deleted", "deleted"]
        forged = E.encode({**E.decode(gone.splitlines()[0]), "rel": "admin.html", "path": str(src / "admin.html")})
        lines = gone + forged
    status, out, err = run(TransportStage(targets_from(spec)), state, lines)
    assert status == 0, err
    assert sorted((ev["rel"], ev["transported"]) for ev in map(E.decode, out.splitlines())) == [
        (name, "deleted") for name in names
    ]
    assert sorted(p.name for p in dest.iterdir()) == ["admin.html"]
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM remote_names").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM intended").fetchone() == (0,)  # each one used, then forgotten
