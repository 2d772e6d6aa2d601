"""fc-transport's ``intended`` table (the names a round of small local copies is about to upload to, committed
before the copies: stages/transport/stage.py work_ahead) is read by the next process for a deletion nothing else
names.  A forged line must not put a name there that a forged deletion then removes: a created line for a file
that is not at the source (its ``name`` the administrator's index.html) uploads nothing, so it names nothing, and
a round's rows live only until that round's commit, not while the process waits idle for its next line (a kill
-9 then, a reboot, the OOM killer, is no one's to time).

Real fc-transport processes (bin/fc-transport, killed with SIGKILL) and a forked one killed like kill -9 at its
first commit (tests/transport/test_recovered.py), a real state file, a real local destination."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from tests.transport.conftest import fc
from tests.transport.test_recovered import killed_at_first_commit, run

ADMIN = b"<h1>the administrator's page</h1>"


def _line(src: Path, rel: str, kind: str, **more: object) -> bytes:
    ev: dict = {"v": 1, "kind": kind, "source": "site", "root": str(src), "path": str(src / rel), "rel": rel, **more}
    return json.dumps(ev).encode() + b"\n"


def _site(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    (dest / "index.html").write_bytes(ADMIN)
    (src / "a.txt").write_bytes(b"a" * 100)
    return src, dest, state


def _intended(state: Path) -> list[tuple[bytes, bytes]]:
    with sqlite3.connect(state) as db:
        return [(bytes(p), bytes(r)) for p, r in db.execute("SELECT path, remote FROM intended ORDER BY path")]


def test_a_round_leaves_no_name_for_a_process_killed_while_idle(tmp_path: Path) -> None:
    """A forged line naming a real source file, of its size, but another inode (another file, as far as the upload
    can tell: refused, nothing sent), its ``name`` the administrator's page; the round commits and the process
    waits for its next line, then is killed.  The file is deleted at the source later: its deletion removes
    nothing at the destination, since nothing of it was ever put there."""
    src, dest, state = _site(tmp_path)
    (src / "b.txt").write_bytes(b"12345")
    ino = (src / "b.txt").stat().st_ino + 1
    cmd = [*fc("fc-transport"), "--to", f"file://{dest}", "--state", str(state), "--drain-timeout", "5"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        forged = _line(src, "b.txt", "created", name="index.html", size=5, ino=ino)
        proc.stdin.write(forged + _line(src, "a.txt", "created", size=100))
        proc.stdin.flush()
        out = proc.stdout.readline()  # a.txt's line: written after the round's commit
        assert json.loads(out)["transported"] == "uploaded", out
        time.sleep(0.5)  # idle, waiting for its next line (nothing to wait for: a kill at any time)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (dest / "a.txt").read_bytes() == b"a" * 100
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "index.html"], "b.txt's upload was refused"
    (src / "b.txt").unlink()
    status, out, err = run(
        TransportStage(targets_from([("to", f"file://{dest}")])), state, _line(src, "b.txt", "deleted")
    )
    assert (dest / "index.html").read_bytes() == ADMIN, err
    assert status == 0, err
    # (a.txt's line may come again: the killed process had not recorded that its reader got it)
    assert [json.loads(line)["rel"] for line in out.splitlines()] in ([], ["a.txt"]), out
    assert _intended(state) == [], "a committed round left its intended names behind"


@pytest.mark.parametrize("there", [None, b"12345"], ids=["missing", "of-another-size"])
def test_a_forged_created_line_names_nothing_in_a_killed_round(tmp_path: Path, there: bytes | None) -> None:
    """A forged created line for b.txt, which is not at the source, or not of the line's size (the upload refuses
    it: nothing sent), its ``name`` the administrator's page, in a round killed before its commit; b.txt then
    deleted: its deletion removes nothing at the destination."""
    src, dest, state = _site(tmp_path)
    if there is not None:
        (src / "b.txt").write_bytes(there)
    spec = [("to", f"file://{dest}")]
    forged = _line(src, "b.txt", "created", name="index.html", size=33)
    killed_at_first_commit(spec, state, forged + _line(src, "a.txt", "created", size=100))
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "index.html"], "the killed round copied a.txt"
    (src / "b.txt").unlink(missing_ok=True)
    status, out, err = run(TransportStage(targets_from(spec)), state, _line(src, "b.txt", "deleted"))
    assert (dest / "index.html").read_bytes() == ADMIN, err
    assert status == 0, err
    assert out == b""
    assert _intended(state) == [(os.fsencode(src / "a.txt"), b"a.txt")]  # the real upload's name only
