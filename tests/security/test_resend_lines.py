"""Resend lines (events.RESEND: fc-tee and fc-filter write one first into each named FIFO when they start) are
lines on a pipe like any other: anyone who can write the FIFO can write them.  A durable reader takes one as its
input's end (Intake.resend: a new session, its writers asked again, their lines held until the replay).

- In a FIFO other users may write, our acknowledgements reach no writer, so no replay can come: each resend line
  held every writer's lines for Holding.AWAIT_SECONDS again, and another user's line every second held them all
  for as long as they went on.  There a resend line asks nothing.
- A burst of them (one write, many lines) asks once per read, not once per line: each ask is an acknowledgement
  written into every writer's state file and a replay by each writer.

Real fc-watch (polling) writing a named FIFO, real fc-record reading it (--input), a real forger's writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

RESEND = b'{"v":1,"kind":"resend"}\n'


class Pipeline:
    """fc-watch -> FIFO -> fc-record -v --output FILE, on a folder of 5 files."""

    def __init__(self, d: Path, mode: int):
        self.d = d
        (d / "src").mkdir()
        for i in range(5):
            (d / "src" / f"f{i}.txt").write_text("x")
        self.fifo = d / "fifo"
        os.mkfifo(self.fifo, 0o600)
        os.chmod(self.fifo, mode)
        self.out, self.err = d / "out.jsonl", d / "record.err"
        py, bin_ = sys.executable, ROOT / "bin"
        record = [py, str(bin_ / "fc-record"), "-v", "--db", str(d / "rec.db"), "--state", str(d / "r.db")]
        record += ["--input", str(self.fifo), "--output", str(self.out)]
        watch = [py, str(bin_ / "fc-watch"), "--state", str(d / "w.db"), "--output", str(self.fifo)]
        watch += ["--backend", "polling", "--interval", "0.2", "--source", f"site={d / 'src'}"]
        self.procs = [subprocess.Popen(record, stderr=self.err.open("wb"))]
        self.procs.append(subprocess.Popen(watch, stderr=subprocess.DEVNULL))

    def rels(self) -> set[str]:
        if not self.out.exists():
            return set()
        return {json.loads(x)["rel"] for x in self.out.read_bytes().splitlines(keepends=True) if x.endswith(b"\n")}

    def wait_for(self, rel: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while rel not in self.rels():
            assert time.monotonic() < deadline, f"{rel} never came: {self.err.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_resend_lines_in_a_fifo_others_may_write_hold_nothing(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, 0o622)
    try:
        pipeline.wait_for("f4.txt")  # (after Holding.AWAIT_SECONDS: no acknowledgement reaches fc-watch)
        assert "other users may write into" in pipeline.err.read_text()
        fd = os.open(pipeline.fifo, os.O_WRONLY)
        try:
            (tmp_path / "src" / "new.txt").write_text("y")
            # one line a second, for as long as new.txt is not through, or 60 s (each one held it 10 s more)
            deadline = time.monotonic() + 60
            while "new.txt" not in pipeline.rels() and time.monotonic() < deadline:
                os.write(fd, RESEND)
                time.sleep(1)
            through = "new.txt" in pipeline.rels()
        finally:
            os.close(fd)
        assert through, "held for as long as the resend lines came"
    finally:
        pipeline.stop()


def test_a_burst_of_resend_lines_asks_once_per_read(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, 0o600)
    try:
        pipeline.wait_for("f4.txt")
        fd = os.open(pipeline.fifo, os.O_WRONLY)
        try:
            os.write(fd, RESEND * 1000)  # one write of 24 KB: a few reads at most
        finally:
            os.close(fd)
        (tmp_path / "src" / "new.txt").write_text("y")
        pipeline.wait_for("new.txt")  # nothing lost, nothing held for good
    finally:
        pipeline.stop()
    asked = pipeline.err.read_text().count("a pass-through before us started")
    assert 1 <= asked <= 50, f"asked {asked} times for 1,000 resend lines in one write"
