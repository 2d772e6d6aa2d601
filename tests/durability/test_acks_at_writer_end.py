"""`fc-watch --scan-once | tee >(fc-filter ...) | fc-filter ...` (examples/pipelines.sh fan_out): one branch's
fc-filter now and then never acknowledged fc-watch (tests/examples/test_pipelines.py flaky, 1 run in 4 in a
clean-clone CI run, 2 in 5 on a quiet machine).  Its first look at who writes its pipe came at the END of the
pipeline, when the process writing it was young and showed no state file: fc-watch had closed its state and
still held its stdout (a process keeps its fds until the very end of its exit), or tee had closed its input at
EOF and still held its outputs.  That is what a young forger looks like: the reader waited, the process left,
and the writer was refused for the run ("a forged hop?"), so it re-sent everything next run.

A writer now says, in its state and before it lets go of it, which pipes the processes reading its output
write into (run_next, delivery/runs.py: at that moment they still read it, it has not closed it): a reader of
one of those knows the writer as its own, as one of the writer's own pipe (run_out)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fileconveyor.delivery import ack_check
from fileconveyor.delivery.durable import Acknowledger, StageState
from tests.conftest import ROOT, held_for
from tests.security.stage_runs import env
from tests.security.test_forged_acks import _acks as all_acks

WATCH = [sys.executable, str(ROOT / "bin" / "fc-watch")]
# a pass-through at its end, stretched: it copies its input to the end, closes it (as tee does at EOF) and still
# holds its output until killed
AT_ITS_END = ["sh", "-c", "cat; exec sleep 60 0<&-"]


def _acks(path: Path) -> list[tuple]:
    return [(row[0], row[2]) for row in all_acks(path)]  # reader, seq


def test_a_writer_behind_a_pass_through_at_its_end_is_acknowledged(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.css").write_text("a")
    wstate, fstate, err_path = tmp_path / "w.db", tmp_path / "f.db", tmp_path / "filter.err"
    w_r, w_w = os.pipe()  # fc-watch's stdout
    a_r, a_w = os.pipe()  # fc-filter's stdin
    tee = subprocess.Popen(AT_ITS_END, stdin=w_r, stdout=a_w)
    os.close(w_r)
    os.close(a_w)
    try:
        watch = subprocess.run([*WATCH, "--scan-once", "--state", str(wstate), str(site)], stdout=w_w, timeout=60)
        assert watch.returncode == 0
        os.close(w_w)
        w_w = -1
        # fc-watch has ended and the pass-through has read its input to the end: it reads nothing, holds no state
        # file and is young (ack_check.writer_starting) when fc-filter reads its line
        with open(err_path, "wb") as err:
            filt = subprocess.Popen(
                [*held_for(1, "relay"), "-v", "--state", str(fstate)], stdin=a_r, stderr=err, env=env(tmp_path)
            )
        os.close(a_r)
        a_r = -1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and filt.poll() is None:  # fc-filter looked at its writer
            if b"has just started" in err_path.read_bytes() or _acks(wstate):
                break
            time.sleep(0.05)
        tee.kill()  # the pass-through leaves: fc-filter's input ends
        assert filt.wait(timeout=60) == 0, err_path.read_text()
    finally:
        tee.kill()
        tee.wait(timeout=30)
        for fd in (w_w, a_r):
            if fd >= 0:
                os.close(fd)
    err_text = err_path.read_text()
    assert "not acknowledging" not in err_text, err_text
    assert _acks(wstate) == [(str(fstate), 1)], err_text


def test_a_writer_found_without_its_state_at_its_end_is_acknowledged(tmp_path: Path) -> None:
    """The other window: a writer between closing its state file and its exit still holds its output, behind a
    young pass-through (tee): a look then finds a process in the chain that makes lines without the state file."""
    w_r, w_w = os.pipe()  # the writer's output
    a_r, a_w = os.pipe()  # our input
    tee = subprocess.Popen(["cat"], stdin=w_r, stdout=a_w)
    os.close(w_r)
    os.close(a_w)
    writer = None
    try:
        origin = tmp_path / "w.db"
        state = StageState(origin, out=ack_check.input_ident(w_w))  # its run, writing into its pipe
        epoch = state.epoch
        # it ends: its state closed first, its output (stdout, the process's) held until its exit
        writer = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=w_w)
        state.close()
        os.close(w_w)
        w_w = -1
        warned: list[str] = []
        reader = Acknowledger(str(tmp_path / "r.db"), lambda key, text: warned.append(text), ack_check.input_ident(a_r))
        reader.VERIFY_STARTING = 0.0
        first = reader.send({str(origin): (epoch, 5)}, force=True)
        writer.kill()  # the writer's exit ends the pass-through's input, and so ours
        writer.wait(timeout=30)
        assert tee.wait(timeout=30) == 0
        last = reader.send({str(origin): (epoch, 10)}, force=True)  # our last acknowledgement
        reader.close()
        assert (first, last) == ({str(origin)}, {str(origin)}), warned
        assert [seq for _, seq in _acks(origin)] == [10]
        assert warned == []
    finally:
        for proc in (writer, tee):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=30)
        for fd in (w_w, a_r):
            if fd >= 0:
                os.close(fd)
