"""A reader's ``.lock`` is looked at from a path in a writer's acks table (delivery/acks_admin.py: --readers,
--forget-reader), and that table is untrusted: whoever holds a lock file there chooses what it says.  A pid
written in digits that are not ASCII ('²', which str.isdigit() takes and int() refuses) crashed both commands with
a traceback (state.lock_holder).  Real processes: fc-watch's own state file, a process holding the lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

BIN = ROOT / "bin"

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, sys.argv[2].encode())
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, BIN / "fc-watch", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_a_lock_whose_pid_is_in_non_ascii_digits_is_no_crash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.css").write_text("a{}\n")
    state = tmp_path / "w.db"
    assert _run("--scan-once", "--state", state, site).returncode == 0
    reader = tmp_path / "r" / "t.db"
    reader.parent.mkdir()
    conn = sqlite3.connect(state)
    epoch = format(conn.execute("SELECT value FROM meta WHERE name='epoch'").fetchone()[0], "x")
    with conn:
        conn.execute(
            "INSERT INTO acks(reader, epoch, seq, at, session) VALUES (?, ?, ?, ?, ?)",
            (str(reader), epoch, 0, time.time(), "s"),
        )
    conn.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"{reader}.lock", "\u00b2\u0663"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        listed = _run("--state", state, "--readers")
        assert "Traceback" not in listed.stderr and listed.returncode == 0, listed.stderr
        assert str(reader) in listed.stdout and "running" in listed.stdout, listed.stdout
        forget = _run("--state", state, "--forget-reader", reader)
        assert "Traceback" not in forget.stderr and forget.returncode == 4, forget.stderr
        assert "is running" in forget.stderr, forget.stderr
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    conn = sqlite3.connect(state)
    try:
        assert [r for (r,) in conn.execute("SELECT reader FROM acks")] == [str(reader)], "a running reader stays"
    finally:
        conn.close()
