"""A pipeline restarted as a whole: every stage starts at once, and a reader that knows its writer from its
state file registers with it before the writer has opened its own state file (a slow start: fc-consume
importing the NATS client).  The reader must look again, not refuse the writer for the whole run: refused,
nothing is ever acknowledged and the writer keeps (and fc-consume never releases) everything."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.durability.test_fifo_restart import make_events

FILTER = f"{sys.executable} {ROOT / 'bin' / 'fc-filter'} --extensions css --drain-timeout 6"


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
