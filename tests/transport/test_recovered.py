"""fc-transport killed after an upload and before its commit: the restarted process finds the item in its inbox
and used to send it again (the chaos run's duplicate uploads, issue 18).  Now, where the transporter can tell
(``skip_unchanged``: file://, S3, Cloud Files), it looks at the destination first: the same bytes there are not
sent again (``"transported": "unchanged"``); different bytes (the killed process had not sent them yet) are.
Real runner, real fc-transport to a local folder, real state file; the kill is a real ``_exit`` of a forked
process between the upload and the commit."""

from __future__ import annotations

import io
import multiprocessing
import os
import sqlite3
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.runner import Done, Item, Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stopping import Stopper

from .conftest import event, jsonl


class KilledBeforeCommit(TransportStage):
    """fc-transport that dies like ``kill -9`` when it would record its first round (uploads done)."""

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        os._exit(137)


def run(stage: TransportStage, state: Path, data: bytes) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=state, drain_timeout=10)
    status = Runner(stage, opts, io.BytesIO(data), out, Reporter("fc-t", err, 1), Stopper()).run()
    return status, out.getvalue(), err.getvalue()


def test_an_upload_done_but_not_recorded_is_not_sent_again(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    for name in ("same.txt", "other.txt"):
        (src / name).write_bytes(name.encode() * 100)
    spec = [("to", f"file://{dest}")]
    data = jsonl([event(src, "same.txt"), event(src, "other.txt")])
    child = multiprocessing.get_context("fork").Process(
        target=run, args=(KilledBeforeCommit(targets_from(spec)), state, data)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 137
    assert (dest / "same.txt").read_bytes() == b"same.txt" * 100, "the killed process uploaded nothing"
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (2,)  # nothing recorded as done
    (dest / "other.txt").write_bytes(b"an older version")  # as if the kill came before this one was sent
    before = (dest / "same.txt").stat().st_ino

    status, out, err = run(TransportStage(targets_from(spec)), state, b"")
    assert status == 0, err
    sent = {ev["rel"]: ev["transported"] for ev in map(E.decode, out.splitlines())}
    assert sent == {"same.txt": "unchanged", "other.txt": "uploaded"}
    assert (dest / "same.txt").stat().st_ino == before  # not written again
    assert (dest / "other.txt").read_bytes() == b"other.txt" * 100
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM remote_names").fetchone() == (2,)


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
