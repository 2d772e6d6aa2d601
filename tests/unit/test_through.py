"""End-to-end acknowledgements (delivery/through.py, acks.record/throughs): what a stage says is done by it and
every stage after it, from its own readers' rows in its state file."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor.delivery import acks
from fileconveyor.delivery.durable import StageState
from fileconveyor.delivery.through import FIRST_READER_WAIT, QUICK_READER_WAIT, Through
from tests.conftest import require_tool


def reader_says(st: StageState, reader: str, seq: int, through: int | None) -> None:
    acks.record(st.db, reader, st.epoch, seq, "s", through)


def made(st: StageState, n: int) -> None:
    """``n`` output lines committed (their seqs taken)."""
    for _ in range(n):
        st.hop()


def _pipe() -> tuple[int, int]:
    """The identity of a real pipe, as a stage writing into one has it (runs.current, ack_check.output_ident)."""
    r, w = os.pipe()
    try:
        st = os.fstat(w)
        return st.st_dev, st.st_ino
    finally:
        os.close(r)
        os.close(w)


def test_the_last_stage_is_through_at_its_mark(tmp_path: Path) -> None:
    now = [100.0]
    with StageState(tmp_path / "s.db", out=_pipe()) as st:
        t = Through(st, clock=lambda: now[0])
        assert t.compute({"/w.db": ("e", 2)}) == {"/w.db": 2}  # made nothing (filtered): nothing to wait for
        made(st, 3)
        # output and no reader row: a reader may still be starting (its first line not read yet); a worker lost
        # now must leave these lines to the broker, so they are not through yet
        assert t.compute({"/w.db": ("e", 7)}) == {"/w.db": 2}
        now[0] += FIRST_READER_WAIT - 0.1
        assert t.compute({"/w.db": ("e", 8)}) == {"/w.db": 2}
        now[0] += 0.2
        assert t.compute({"/w.db": ("e", 8)}) == {"/w.db": 8}  # nothing reads us: the end of the chain


def test_a_first_reader_that_registers_in_time_is_waited_for(tmp_path: Path) -> None:
    now = [100.0]
    with StageState(tmp_path / "s.db", out=_pipe()) as st:
        t = Through(st, clock=lambda: now[0])
        made(st, 3)
        assert t.compute({"/w.db": ("e", 7)}) == {"/w.db": None}
        now[0] += 1.0
        reader_says(st, "/r.db", 3, 0)  # the reader's first acknowledgement: it has them, the stage after it not
        now[0] += FIRST_READER_WAIT
        assert t.compute({"/w.db": ("e", 7)}) == {"/w.db": None}  # waits for the reader, however long
        reader_says(st, "/r.db", 3, 3)
        assert t.compute({"/w.db": ("e", 7)}) == {"/w.db": 7}


def test_a_stage_writing_into_no_pipe_or_fifo_is_the_last_at_once(tmp_path: Path) -> None:
    # a file, /dev/null, a terminal: no File Conveyor stage reads it as it is written, so none can be starting
    # (a worker's fc-record > /dev/null: its writer's broker acknowledgements are not held back for the wait)
    with StageState(tmp_path / "s.db") as st:
        t = Through(st, clock=lambda: 100.0)
        made(st, 3)
        assert t.compute({"/w.db": ("e", 7)}) == {"/w.db": 7}


def test_the_first_reader_wait_outlasts_fc_tees_wait_for_its_readers(tmp_path: Path) -> None:
    """fc-tee gives its FIFOs' readers up to --first-wait (30 s) to come, and a reader behind it gets no line, so
    no chance to say it is one, meanwhile: fc-watch | fc-filter | fc-tee --output a.fifo --output b.fifo with
    b's reader missing, fc-filter said at 10 s that all 50 lines were through while a's reader had none (a worker
    lost then: fc-consume had acknowledged them to the broker, and nobody ever got them)."""
    from fileconveyor.cli.tee import build_parser

    tee_wait = build_parser().parse_args(["--output", "x"]).first_wait
    assert tee_wait + 5 < FIRST_READER_WAIT
    now = [100.0]
    with StageState(tmp_path / "s.db", out=_pipe()) as st:
        t = Through(st, clock=lambda: now[0])
        made(st, 50)
        assert t.compute({"/w.db": ("e", 50)}) == {"/w.db": None}
        now[0] += tee_wait + 1  # fc-tee gives up on b: a's reader gets its first line and registers
        assert t.compute({"/w.db": ("e", 50)}) == {"/w.db": None}
        reader_says(st, "/a.db", 0, 0)
        now[0] += FIRST_READER_WAIT
        assert t.compute({"/w.db": ("e", 50)}) == {"/w.db": None}


@contextlib.contextmanager
def _wrote_a_line(tmp_path: Path, w: int, now: list[float]) -> Iterator[Through]:
    """A stage writing into the pipe end ``w`` on the clock ``now``: 3 lines made, one written into the pipe, and
    no reader row: not through yet."""
    st_pipe = os.fstat(w)
    with StageState(tmp_path / "s.db", out=(st_pipe.st_dev, st_pipe.st_ino)) as st:
        t = Through(st, clock=lambda: now[0])
        made(st, 3)
        os.write(w, b'{"line": 1}\n')
        assert t.compute({"/w.db": ("e", 3)}) == {"/w.db": None}
        yield t


def test_a_reader_that_read_our_lines_and_said_nothing_is_no_stage(tmp_path: Path) -> None:
    """A worker's fc-record into supervisord's log pipe, or into jq: what it wrote is read out of the pipe and no
    reader ever registers.  It is the last stage once QUICK_READER_WAIT has passed with the pipe read empty, not
    after FIRST_READER_WAIT (its writer's broker acknowledgements, an --idle-exit worker's run, waited 40 s); while
    our lines stay unread in the pipe (a reader still starting, fc-tee waiting for its FIFOs) it waits on."""
    r, w = os.pipe()
    try:
        now = [100.0]
        with _wrote_a_line(tmp_path, w, now) as t:
            now[0] += QUICK_READER_WAIT + 1
            assert t.compute({"/w.db": ("e", 3)}) == {"/w.db": None}  # unread: a reader may still be starting
            os.read(r, 100)
            assert t.compute({"/w.db": ("e", 3)}) == {"/w.db": 3}  # read, and nobody said it is a reader
    finally:
        os.close(r)
        os.close(w)


def test_through_waits_for_the_readers_to_be_through_what_we_made(tmp_path: Path) -> None:
    with StageState(tmp_path / "s.db") as st:
        reader_says(st, "/r.db", 0, 0)
        t = Through(st)
        made(st, 3)  # our seqs 1-3, from the writer's lines up to 5
        assert t.compute({"/w.db": ("e", 5)}) == {"/w.db": None}  # not known yet: the row keeps what it had
        made(st, 2)  # 4-5 from lines up to 9 (finished out of order: the step covers all we made by then)
        assert t.compute({"/w.db": ("e", 9)}) == {"/w.db": None}
        reader_says(st, "/r.db", 5, 2)  # the reader has them all, the stage after it only 1-2
        assert t.compute({"/w.db": ("e", 9)}) == {"/w.db": None}
        reader_says(st, "/r.db", 5, 3)
        assert t.compute({"/w.db": ("e", 9)}) == {"/w.db": 5}
        reader_says(st, "/r.db", 5, 5)
        assert t.compute({"/w.db": ("e", 9)}) == {"/w.db": 9}
        # lines filtered out make nothing: through follows the mark once the readers are through what we made
        assert t.compute({"/w.db": ("e", 12)}) == {"/w.db": 12}


def test_through_is_the_slowest_readers(tmp_path: Path) -> None:
    with StageState(tmp_path / "s.db") as st:
        reader_says(st, "/a.db", 0, 0)
        reader_says(st, "/b.db", 0, 0)
        t = Through(st)
        made(st, 4)
        t.compute({"/w.db": ("e", 4)})
        reader_says(st, "/a.db", 4, 4)
        reader_says(st, "/b.db", 4, 3)  # b has them, what comes after b does not (yet)
        assert t.compute({"/w.db": ("e", 4)}) == {"/w.db": None}
        acks.record(st.db, "/b.db", st.epoch, 4, "s")  # a restarted b, its through not known yet
        assert t.compute({"/w.db": ("e", 4)}) == {"/w.db": None}  # the row keeps b's through
        st.db.execute("UPDATE acks SET through=NULL WHERE reader='/b.db'")  # a reader from before through: its seq
        assert t.compute({"/w.db": ("e", 4)}) == {"/w.db": 4}


def test_a_writer_keeps_the_through_of_a_restarted_reader_until_it_knows_more(tmp_path: Path) -> None:
    with StageState(tmp_path / "w.db") as w:
        acks.record(w.db, "/r.db", w.epoch, 10, "one", 8)
        acks.record(w.db, "/r.db", w.epoch, 10, "two", None)  # restarted: not known in this process yet
        assert acks.throughs(w.db, w.epoch) == {"/r.db": 8}
        acks.record(w.db, "/r.db", "other", 3, "two", None)  # the writer's state made anew: nothing is through
        assert acks.throughs(w.db, "other") == {"/r.db": 0}


def test_a_writer_of_an_older_version_takes_the_acknowledgement_without_through(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.execute("CREATE TABLE acks(reader TEXT PRIMARY KEY, epoch TEXT, seq INTEGER, at REAL, session TEXT)")
    acks.record(db, "/r.db", "e", 5, "s", 4)
    assert db.execute("SELECT reader, seq FROM acks").fetchall() == [("/r.db", 5)]


@pytest.mark.parametrize("after", ["stage", "sink"])
def test_a_stage_behind_a_pass_through_is_waited_for_though_our_pipe_was_read(tmp_path: Path, after: str) -> None:
    """``fc-filter | tee log | fc-transport``: tee reads our pipe empty at once, and our lines wait in its output
    pipe while fc-transport starts (loading, connecting: over QUICK_READER_WAIT on a busy host).  We took ourselves
    for the end of the chain and said our lines were through (a worker's fc-consume acknowledged them to the broker:
    lost with the host).  A pass-through into no stage (``| cat > /dev/null``, jq) still ends the chain quickly."""
    require_tool("cat")
    script = tmp_path / "fc-transport"  # a stage still starting: reads nothing yet
    script.write_text("import time\ntime.sleep(60)\n")
    r, w = os.pipe()
    stage = None
    try:
        if after == "stage":
            stage = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE)
        sink = stage.stdin if stage is not None else subprocess.DEVNULL
        cat = subprocess.Popen(["cat"], stdin=r, stdout=sink)
        os.close(r)
        now = [100.0]
        with _wrote_a_line(tmp_path, w, now) as t:
            deadline = time.monotonic() + 10
            while t._unread() != 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # cat has read it
            now[0] += QUICK_READER_WAIT + 1
            assert t.compute({"/w.db": ("e", 3)}) == {"/w.db": None if after == "stage" else 3}
        os.close(w)
        cat.wait(10)
    finally:
        if stage is not None:
            stage.kill()
            stage.wait()
