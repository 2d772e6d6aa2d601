"""A pipeline restarted as a whole: every stage starts at once, and a reader that knows its writer from its
state file registers with it before the writer has opened its own state file (a slow start: fc-consume
importing the NATS client).  The reader must look again, not refuse the writer for the whole run: refused,
nothing is ever acknowledged and the writer keeps (and fc-consume never releases) everything."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from fileconveyor.delivery import ack_check
from fileconveyor.delivery.durable import Acknowledger, StageState
from tests.conftest import RELAY
from tests.durability.test_fifo_restart import make_events

FILTER = f"{sys.executable} {RELAY} --extensions css --drain-timeout 6"


def run(tmp: Path, events: list[bytes], writer_delay: float) -> list[int]:
    (tmp / "in.ndjson").write_bytes(b"".join(events))
    # the writer's input stays open a second after its lines: it is still running when the reader looks
    writer = f"(cat {tmp / 'in.ndjson'}; sleep 1) | {FILTER} --state {tmp / 'w.db'}"
    if writer_delay:
        writer = f"sleep {writer_delay}; {writer}"  # the pipe's writer (a shell), before any state is open
    script = f"({writer}) 2>>{tmp / 'w.err'} | {FILTER} -v --state {tmp / 'r.db'} >>{tmp / 'out'} 2>>{tmp / 'r.err'}"
    res = subprocess.run(["bash", "-c", script + "; echo ${PIPESTATUS[@]}"], capture_output=True, timeout=60)
    return [int(x) for x in res.stdout.split()]


def test_reader_restarted_with_a_slow_writer_still_acknowledges(tmp_path: Path) -> None:
    events = make_events(100)
    assert run(tmp_path, events[:50], 0) == [0, 0]
    # the second run: the reader registers with w.db at its start, while the writer is still "starting"
    assert run(tmp_path, events[50:], 1.5) == [0, 0], (tmp_path / "r.err").read_text()
    with sqlite3.connect(tmp_path / "w.db") as db:
        (acked,) = db.execute("SELECT seq FROM acks").fetchone()
        (last,) = db.execute("SELECT max(seq) FROM outbox").fetchone() or (None,)
    assert "no process writing our input has it open" not in (tmp_path / "r.err").read_text()
    assert last is None or acked >= last


def test_a_writer_that_opens_its_state_just_after_a_look_is_acknowledged_at_once(tmp_path: Path) -> None:
    """The race behind the test above failing under load (1 run in 3): the reader looked at its writer a moment
    before the writer opened its state file, found it just started, and put the next look VERIFY_STARTING
    later; the writer then opened its state, wrote its 50 lines and ended (its input was long complete), and
    the reader's every acknowledgement until its own end, the last one included, fell in that pause and was
    dropped unsaid.  The writer kept lines 51-100 for a reader that had taken them.  Once the writer's state says
    its run writes into our pipe (runs.current), nothing is left to wait for."""
    r, w = os.pipe()
    # the process writing our input: young, with no state file open (a writer still importing)
    child = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=w)
    try:
        origin = str(tmp_path / "w.db")
        last_run = StageState(Path(origin))  # the writer's state, its last run writing into another pipe
        epoch = last_run.epoch
        last_run.close()
        warned: list[str] = []
        reader = Acknowledger(str(tmp_path / "r.db"), lambda key, text: warned.append(text), ack_check.input_ident(r))
        reader.VERIFY_STARTING = 60.0  # the next regular look comes after the end: what a loaded machine did
        assert reader.send({origin: (epoch, 50)}, force=True) == set()  # at our start: the writer is starting
        StageState(Path(origin), out=ack_check.input_ident(w)).close()  # it opens its state, before any line
        # its lines came, and its end: our acknowledgement of them (the last one a reader makes) gets through
        assert reader.send({origin: (epoch, 100)}, force=True) == {origin}
        reader.close()
        with sqlite3.connect(origin) as db:
            assert db.execute("SELECT seq FROM acks").fetchall() == [(100,)]
        assert warned == []
    finally:
        child.kill()
        child.wait()
        os.close(r)
        os.close(w)
