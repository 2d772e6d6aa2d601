"""A branch reader that starts after fc-tee stopped waiting for it (--first-wait), when no line comes any more,
still gets every line: fc-tee sends it the last line it passed on, the reader registers on it with that line's
writer, and the writer re-sends what it missed (kept for it although the other branch acknowledged it all:
durable.RETAIN_ACKED).  Before, the branch got nothing until the next change, and, behind a stage, nothing ever
of what the stage had made before (300 of 300 lost)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.stages.tee_rig import TeeRig, fc


@pytest.mark.parametrize("writer", ["watch", "stage", "filter"])
def test_a_branch_reader_later_than_first_wait_gets_every_line(tmp_path: Path, writer: str) -> None:
    rig = TeeRig(tmp_path, 300, ("w", "x", "a", "b"), name="f{:04d}.txt")
    fifo, st, log = rig.fifo, rig.state, rig.log
    procs = []
    tee_in = fifo["w"]
    if writer == "stage":  # fc-watch -> fc-relay (a stage: its outbox) -> fc-tee
        procs.append(fc("fc-relay", "--min-size", "0", "--input", str(fifo["w"]), "--output", str(fifo["x"]),
                        "--state", str(st / "mid.db"), stderr=log))  # fmt: skip
        tee_in = fifo["x"]

    def fc_filter() -> subprocess.Popen[bytes]:  # a pass-through: its first line into x is a resend line
        return fc("fc-filter", "--min-size", "0", "--input", str(fifo["w"]), "--output", str(fifo["x"]), stderr=log)

    if writer == "filter":  # fc-watch -> fc-filter (a pass-through) -> fc-tee
        procs.append(fc_filter())
        tee_in = fifo["x"]
    procs.append(fc("fc-tee", "--input", str(tee_in), "--output", str(fifo["a"]), "--output", str(fifo["b"]),
                    "--first-wait", "1", stderr=log))  # fmt: skip
    procs.append(rig.branch("a", "filter"))
    procs.append(rig.watch())
    try:
        assert not rig.wait_all("a", 30)
        time.sleep(4)  # the writers have A's acknowledgements and have pruned what A had
        if writer == "filter":
            # restarted: its resend line (no hop) is the last line fc-tee passed on; a late reader registers on
            # nothing with it (events.RESEND)
            procs[0].kill()
            procs[0].wait()
            procs[0] = fc_filter()
            time.sleep(3)
        procs.append(rig.branch("b", "filter"))  # no line comes any more: the site does not change
        lost = rig.wait_all("b", 30)
        assert not lost, f"branch b lost {len(lost)}"
    finally:
        for p in procs:
            p.kill()
            p.wait()
