"""fc-tee gives a branch reader that comes while no line arrives the last line it passed on, for the reader to
register on with that line's writer, which re-sends what the branch missed (tests/stages/test_tee_late_branch.py).
It kept out of that only a resend line spelled as fc-tee and fc-filter write it (events.RESEND_LINE): any other
line without a hop as the last one (a resend line with a field more, a bad line, an event without a hop: anyone
who writes fc-tee's input writes such a line) was given to the late reader, which registered on nothing with it
and got none of what it missed.  Nor is a line with a hop enough: one whose ``hop.from`` names no writer of ours
(a made-up state file, another pipeline's fc-watch) written last left the late reader registered with that one
alone; fc-tee now keeps the last line of each writer (a bounded number of them, a made-up one going first:
stages/tee/writers.py) and gives it them all.  One that names the real writer and its epoch with a seq past what it
wrote is refused by the reader, which registered with nobody then; now it registers with that writer as from what
the writer's state file says it wrote.

Real fc-watch -> FIFO -> fc-tee -> two FIFOs -> two durable readers (fc-relay); branch b starts late; a forger's
line is written into fc-tee's input FIFO after the last real one."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.stages.tee_rig import BIN, TeeRig, fc


@pytest.mark.parametrize(
    "forged",
    [b'{"v":1,"kind":"resend","x":1}\n', b'{"kind":"resend","v":1}\n', b"not json\n"],
    ids=["resend-field-more", "resend-reordered", "bad-line"],
)
def test_a_late_branch_gets_every_line_whatever_line_came_last(tmp_path: Path, forged: bytes) -> None:
    _late_branch_after(tmp_path, lambda rig: forged)


def _event(rig: TeeRig, rel: str, origin: str, epoch: str, seq: int) -> bytes:
    """A created event with a hop from ``origin`` (a made-up file of the site: nothing is there)."""
    root = str(rig.site)
    return b"%s\n" % json.dumps(
        {"v": 1, "id": rel, "kind": "created", "source": "site", "root": root, "path": f"{root}/{rel}",
         "rel": rel, "size": 1, "mtime": 1.0, "mtime_ns": "1000000000", "ino": 1, "via": "scan",
         "hop": {"from": origin, "epoch": epoch, "seq": seq}},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def _made_up(rig: TeeRig) -> bytes:
    return _event(rig, "forged.txt", str(rig.tmp / "nowhere.db"), "0123abcd", 7)


def _another_writer(rig: TeeRig) -> bytes:
    """A line of another pipeline's fc-watch: a real state file of ours, its real epoch (read by the forger)."""
    other = rig.tmp / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    watch = [sys.executable, str(BIN / "fc-watch"), "--scan-once", "--state", str(rig.state / "other.db"), str(other)]
    return subprocess.run(watch, check=True, capture_output=True).stdout.splitlines(keepends=True)[-1]


def _flood(rig: TeeRig) -> bytes:
    """Made-up writers by the hundred: more than fc-tee keeps (writers.MAX_WRITERS)."""
    return b"".join(_event(rig, f"forged{i}.txt", str(rig.tmp / f"nowhere{i}.db"), "0123abcd", 7) for i in range(300))


def _seq_past(rig: TeeRig) -> bytes:
    """The real writer and its epoch (read by the forger), a seq past what it wrote: the late reader refuses the
    line, and has no other of that writer to register on."""
    db = sqlite3.connect(rig.state / "watch.db")
    try:
        meta = dict(db.execute("SELECT name, value FROM meta WHERE name IN ('epoch', 'last_batch')").fetchall())
    finally:
        db.close()
    return _event(rig, "forged.txt", str(rig.state / "watch.db"), format(meta["epoch"], "x"), meta["last_batch"] + 50)


@pytest.mark.parametrize(
    "forge", [_made_up, _another_writer, _flood, _seq_past], ids=["made-up", "another-writer", "flood", "seq-past"]
)
def test_a_late_branch_gets_every_line_whatever_hop_came_last(tmp_path: Path, forge: Callable[[TeeRig], bytes]) -> None:
    """Branch b lost all 100 files before (it registered with the forged line's writer alone)."""
    _late_branch_after(tmp_path, forge)


def _late_branch_after(tmp_path: Path, forge: Callable[[TeeRig], bytes]) -> None:
    rig = TeeRig(tmp_path, 100, ("w", "a", "b"))
    fifo = rig.fifo
    tee = ["--input", str(fifo["w"]), "--output", str(fifo["a"]), "--output", str(fifo["b"]), "--first-wait", "1"]
    procs = [fc("fc-tee", *tee, stderr=rig.log), rig.branch("a"), rig.watch()]
    try:
        assert not rig.wait_all("a", 60)
        forged = forge(rig)
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


def _other_writers(rig: TeeRig) -> bytes:
    """The last lines of more real writers than fc-tee keeps (writers.MAX_WRITERS): other pipelines' fc-watch runs,
    each a real state file of ours with its real epoch (what a stage of ours that forges may make or read).  They
    pushed the real writer out (the least recent of writers that are all real), and the late branch lost all."""
    lines = []
    for i in range(20):
        other = rig.tmp / f"other{i}"
        other.mkdir()
        (other / "x.txt").write_text("x")
        state = str(rig.state / f"other{i}.db")
        watch = [sys.executable, str(BIN / "fc-watch"), "--scan-once", "--state", state, str(other)]
        lines.append(subprocess.run(watch, check=True, capture_output=True).stdout.splitlines(keepends=True)[-1])
    return b"".join(lines)


def test_a_late_branch_gets_every_line_after_the_lines_of_many_other_real_writers(tmp_path: Path) -> None:
    _late_branch_after(tmp_path, _other_writers)
