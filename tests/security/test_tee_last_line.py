"""fc-tee gives a branch reader that comes while no line arrives the last line it passed on, for the reader to
register on with that line's writer, which re-sends what the branch missed (tests/stages/test_tee_late_branch.py).
It kept out of that only a resend line spelled as fc-tee and fc-filter write it (events.RESEND_LINE): any other
line without a hop as the last one (a resend line with a field more, a bad line, an event without a hop: anyone
who writes fc-tee's input writes such a line) was given to the late reader, which registered on nothing with it
and got none of what it missed.

Real fc-watch -> FIFO -> fc-tee -> two FIFOs -> two durable readers (fc-relay); branch b starts late; a forger's
line is written into fc-tee's input FIFO after the last real one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.stages.tee_rig import TeeRig, fc


@pytest.mark.parametrize(
    "forged",
    [b'{"v":1,"kind":"resend","x":1}\n', b'{"kind":"resend","v":1}\n', b"not json\n"],
    ids=["resend-field-more", "resend-reordered", "bad-line"],
)
def test_a_late_branch_gets_every_line_whatever_line_came_last(tmp_path: Path, forged: bytes) -> None:
    rig = TeeRig(tmp_path, 100, ("w", "a", "b"))
    fifo = rig.fifo
    tee = ["--input", str(fifo["w"]), "--output", str(fifo["a"]), "--output", str(fifo["b"]), "--first-wait", "1"]
    procs = [fc("fc-tee", *tee, stderr=rig.log), rig.branch("a"), rig.watch()]
    try:
        assert not rig.wait_all("a", 60)
        fd = os.open(fifo["w"], os.O_WRONLY)  # (fc-tee reads it: opened at once)
        try:
            os.write(fd, forged)
        finally:
            os.close(fd)
        time.sleep(1)  # (fc-tee has passed it on: it is its last line; no line comes any more)
        procs.append(rig.branch("b"))
        lost = rig.wait_all("b", 60)
        assert not lost, f"branch b lost {len(lost)}"
    finally:
        for p in procs:
            p.kill()
            p.wait()
