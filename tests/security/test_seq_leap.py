"""A forged line that claims a real writer's hop (its state file and epoch, on every line that writer writes: any
stage between it and us sees them) with a seq a little ahead of what that writer has written.  Taken, it moved
the reader's mark there, and every real line of the writer up to that seq looked like a replay: dropped, and
acknowledged, so the writer forgot it too.  A leap of more than Intake's SEQ_JUMP (10,000) was checked against the
writer's state file (tests/security/test_forged_acks.py); one below it was not, and one line lost up to 9,999 files.

Real fc-watch --scan-once, a forger between it and a real fc-record (it passes every line on, and after the first
writes one of its own with fc-watch's hop and seq + 500), on a tree of 40 files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.security.stage_runs import env

FILES = 40
LEAP = 500

# passes its input on line by line; after the first line, a deleted line of its own with that line's hop, seq + LEAP
FORGER = r"""
import json, sys
leap = int(sys.argv[1])
first = True
for line in sys.stdin.buffer:
    sys.stdout.buffer.write(line)
    if first:
        first = False
        ev = json.loads(line)
        hop = dict(ev["hop"], seq=ev["hop"]["seq"] + leap)
        forged = {"v": 1, "kind": "deleted", "root": ev["root"], "path": ev["root"] + "/gone.txt", "rel": "gone.txt"}
        forged["hop"] = hop
        sys.stdout.buffer.write(json.dumps(forged).encode() + b"\n")
    sys.stdout.buffer.flush()
"""


def _run(d: Path, leap: int) -> tuple[int, list[str], str]:
    py, bin_ = sys.executable, ROOT / "bin"
    watch = subprocess.Popen(
        [py, str(bin_ / "fc-watch"), "--scan-once", "--state", str(d / "w.db"), "--source", f"site={d / 'src'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env(d),
    )
    assert watch.stdout is not None
    forger = subprocess.Popen([py, "-c", FORGER, str(leap)], stdin=watch.stdout, stdout=subprocess.PIPE, env=env(d))
    watch.stdout.close()
    assert forger.stdout is not None
    record = subprocess.run(
        [py, str(bin_ / "fc-record"), "--db", str(d / "rec.db"), "--state", str(d / "r.db"), "--drain-timeout", "5"],
        stdin=forger.stdout,
        capture_output=True,
        env=env(d),
        timeout=120,
    )
    forger.stdout.close()
    watch.wait(60)
    forger.wait(60)
    rels = [json.loads(x)["rel"] for x in record.stdout.splitlines()]
    return record.returncode, rels, record.stderr.decode(errors="replace")


def test_a_forged_seq_a_little_ahead_hides_no_real_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for i in range(FILES):
        (tmp_path / "src" / f"f{i:02}.txt").write_text("x" * i)
    status, rels, err = _run(tmp_path, LEAP)
    # every real line through (on main: the first alone, and the forged deletion); the forged one refused
    assert sorted(rels) == [f"f{i:02}.txt" for i in range(FILES)], err[-3000:]
    assert status == 1 and "input line 2: hop.seq" in err and "is past the last line" in err, err[-3000:]
    # and fc-watch was told no more than what fc-record took: its next run re-sends nothing, loses nothing
    (tmp_path / "src" / "late.txt").write_text("late")
    status, rels, err = _run(tmp_path, 0)
    assert rels == ["late.txt"] or sorted(rels) == ["f00.txt", "late.txt"], err[-3000:]
