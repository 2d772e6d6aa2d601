"""A stage writing to a regular file (``--output FILE``, fc-record's in the chaos run) and killed after appending
lines but before recording them as written: the restarted stage appended them all again (the chaos run's
"record lines re-written", about one per kill of fc-record).  Now the file's own last line (ours: hop from and
epoch) says how far it got.  A file that does not end with our lines (rotated, emptied) still gets them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from fileconveyor.delivery.pipe_tail import written_in_file
from tests.conftest import RELAY, ROOT

N = 50


def fc_filter(tmp_path: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    inp = tmp_path / "in.ndjson"
    inp.write_bytes(data)
    os.chmod(inp, 0o600)
    argv = [sys.executable, str(RELAY), "-q", "--state", str(tmp_path / "f.db")]
    argv += ["--input", str(inp), "--output", str(tmp_path / "out.ndjson")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    return subprocess.run(argv, capture_output=True, timeout=60, env=env)


def events(n: int) -> bytes:
    evs = [{"v": 1, "kind": "created", "root": "/r", "path": f"/r/f{i}.txt", "rel": f"f{i}.txt"} for i in range(n)]
    return b"".join(json.dumps(ev).encode() + b"\n" for ev in evs)


def killed_before_marking(tmp_path: Path) -> None:
    """The state a kill between the write and the commit of the 'written' mark leaves: the mark behind."""
    with sqlite3.connect(tmp_path / "f.db") as db:
        db.execute("UPDATE meta SET v=0 WHERE k='written'")


def seqs(tmp_path: Path) -> list[int]:
    return [json.loads(line)["hop"]["seq"] for line in (tmp_path / "out.ndjson").read_bytes().splitlines()]


def test_lines_appended_by_a_killed_run_are_not_appended_again(tmp_path: Path) -> None:
    p = fc_filter(tmp_path, events(N))
    assert p.returncode == 0, p.stderr
    assert seqs(tmp_path) == list(range(1, N + 1))
    killed_before_marking(tmp_path)
    p = fc_filter(tmp_path, b"")
    assert p.returncode == 0, p.stderr
    assert seqs(tmp_path) == list(range(1, N + 1))  # was 1..N twice


def test_a_file_that_does_not_end_with_them_gets_them_again(tmp_path: Path) -> None:
    p = fc_filter(tmp_path, events(N))
    assert p.returncode == 0, p.stderr
    killed_before_marking(tmp_path)
    out = tmp_path / "out.ndjson"
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:10]) + lines[10][:30])  # cut short, the last line torn
    p = fc_filter(tmp_path, b"")
    assert p.returncode == 0, p.stderr
    got = out.read_bytes().splitlines()
    assert [json.loads(line)["hop"]["seq"] for line in got[:10]] == list(range(1, 11))
    assert got[10] == lines[10][:30]  # the torn line stays a line of its own, not glued to the next one
    # everything after the last whole line comes again
    assert [json.loads(line)["hop"]["seq"] for line in got[11:]] == list(range(11, N + 1))
    out.write_bytes(b"")  # rotated away: nothing of ours at its end
    killed_before_marking(tmp_path)
    assert fc_filter(tmp_path, b"").returncode == 0
    assert seqs(tmp_path) == list(range(1, N + 1))


def test_written_in_file_reads_only_its_own_last_whole_line(tmp_path: Path) -> None:
    f = tmp_path / "out"
    ours = b'{"v":1,"hop":{"from":"/s.db","epoch":"e1","seq":%d}}\n'
    f.write_bytes(b"x" * 100_000 + b"\n" + ours % 7 + ours % 8 + b'{"v":1,"hop":{"fr')
    assert written_in_file(str(f), "/s.db", "e1") == 8
    assert written_in_file(str(f), "/s.db", "e2") is None  # another epoch: not ours
    assert written_in_file(str(f), "/t.db", "e1") is None
    f.write_bytes(ours % 7 + b'{"v":1,"hop":{"from":"/other.db","epoch":"e1","seq":9}}\n')
    assert written_in_file(str(f), "/s.db", "e1") is None  # the last line is another writer's
    assert written_in_file(str(tmp_path / "missing"), "/s.db", "e1") is None
    assert written_in_file(str(tmp_path), "/s.db", "e1") is None  # not a regular file
