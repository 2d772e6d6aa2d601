"""fc-tee looks at the state file a line's hop names when it drops a writer's last line (stages/tee/writers.py),
in its main loop.  The path is the line's, so anyone who writes fc-tee's input chooses it: a SQLite file that
another process holds locked (BEGIN EXCLUSIVE, rollback journal) made each look wait for SQLite's busy timeout
(0.5 s), and every forged line naming a new link to it stopped fc-tee, and every branch behind it, that long (200
lines: over 90 s).  A look never waits now: a file locked then is no writer's.  Real fc-tee, a real process
holding the lock."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

HOLD = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
time.sleep(600)
"""
N = 200


def test_forged_hops_naming_a_locked_database_do_not_stall_fc_tee(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE meta(k, v); CREATE TABLE acks(x); INSERT INTO meta VALUES ('epoch', 'e');")
    conn.close()
    db.chmod(0o600)
    lines = []
    for i in range(N):
        link = tmp_path / f"l{i}.db"
        link.symlink_to(db)
        hop = {"from": str(link), "epoch": "e", "seq": 1}
        ev = {"v": 1, "kind": "created", "source": "s", "root": "/r", "path": f"/r/f{i}", "rel": f"f{i}", "hop": hop}
        lines.append(json.dumps(ev, separators=(",", ":")) + "\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    out = tmp_path / "out.jsonl"
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        tee = subprocess.Popen(
            [sys.executable, str(ROOT / "bin" / "fc-tee"), "--output", str(out)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tee.stdin is not None
        start = time.monotonic()
        for line in lines:  # a write each: each line a new writer, past the 16 kept
            tee.stdin.write(line.encode())
            tee.stdin.flush()
        _, err = tee.communicate(timeout=300)
        took = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    assert tee.returncode == 0 and b"Traceback" not in err, err
    assert out.read_text().splitlines(keepends=True) == lines
    # before: one 0.5 s wait per writer dropped (N - 16 of them: 92 s at the least, however fast the machine);
    # now none, so a bound far above what 200 lines cost on a loaded machine tells the two apart
    assert took < 45, f"fc-tee took {took:.0f} s over {N} lines naming a locked database"
