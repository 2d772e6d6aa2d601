"""Issue 16 review, finding D: forged acknowledgements still got through when no live writer could be asked (an
``--input FILE`` of saved events any user may write): only the epoch was checked then, and the epoch is on every
output line and was in ``--output``/fc-tee files created 0644.  A stage also acknowledged to itself when its own
state path was spelled differently (``/d/./own.db``).  Now an input file others may write gets no acknowledgement,
a stage's own state is recognised by st_dev/st_ino, and output files are owner-only (delivery/ack_check.py,
docs/durability.md)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT
from tests.transport.conftest import env, jsonl, transport  # noqa: F401 - fixture

FILTER = [sys.executable, str(RELAY), "--extensions", "txt", "--drain-timeout", "2"]


def _site(tmp_path: Path) -> dict:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    return {"v": 1, "kind": "created", "source": "s", "root": str(src), "path": str(src / "a.txt"), "rel": "a.txt"}


def _epoch(state: Path) -> str:
    with sqlite3.connect(state) as db:
        return db.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()[0]


def _acks(state: Path) -> list[tuple]:
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT reader FROM acks").fetchall()
    finally:
        db.close()


def test_a_saved_events_file_acknowledges_nothing(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    # --input FILE: no writer to ask, and anyone may have written this file (epoch included)
    good = _site(tmp_path)
    victim = tmp_path / "victim.db"
    subprocess.run([*FILTER, "--state", str(victim)], input=jsonl([good]), capture_output=True, env=env, timeout=60)
    saved = tmp_path / "saved.jsonl"
    saved.write_bytes(jsonl([{**good, "hop": {"from": str(victim), "epoch": _epoch(victim), "seq": 1}}]))
    saved.chmod(0o666)  # any user may have written it (a file of our own that only we can write is ours)
    p = subprocess.run(
        [*FILTER, "--state", str(tmp_path / "r.db"), "--input", str(saved)], capture_output=True, env=env, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["rel"] for x in p.stdout.splitlines()] == ["a.txt"]  # the file is still processed
    assert _acks(victim) == []


@pytest.mark.parametrize("spelling", ["{d}/./own.db", "{d}//own.db"])
def test_a_stage_does_not_acknowledge_to_itself(tmp_path: Path, env: dict[str, str], spelling: str) -> None:  # noqa: F811
    ev = _site(tmp_path)
    own = tmp_path / "own.db"
    subprocess.run([*FILTER, "--state", str(own)], input=jsonl([ev]), capture_output=True, env=env, timeout=60)
    ev["hop"] = {"from": spelling.format(d=tmp_path), "epoch": _epoch(own), "seq": 50}
    subprocess.run([*FILTER, "--state", str(own)], input=jsonl([ev]), capture_output=True, env=env, timeout=60)
    assert _acks(own) == []


def test_output_files_are_owner_only(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    # every line carries its writer's epoch: other users must not read it there
    ev = _site(tmp_path)
    out, tee_out = tmp_path / "out.jsonl", tmp_path / "tee.jsonl"
    old = os.umask(0o022)
    try:
        p = subprocess.run(
            [*FILTER, "--state", str(tmp_path / "f.db"), "--output", str(out)],
            input=jsonl([ev]),
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        tee = [sys.executable, str(ROOT / "bin" / "fc-tee"), "--output", str(tee_out)]
        p = subprocess.run(tee, input=out.read_bytes(), capture_output=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o600
    assert tee_out.stat().st_mode & 0o777 == 0o600
    assert b'"epoch"' in tee_out.read_bytes()


def test_fc_watch_output_file_is_owner_only(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    # fc-watch's lines carry its epoch too; its --output FILE was created with the umask's mode (0644) before it
    # wrote through the one writer of delivery/writer.py, like the stages' and fc-tee's files
    _site(tmp_path)
    out = tmp_path / "watch.jsonl"
    watch = [sys.executable, str(ROOT / "bin" / "fc-watch"), "--scan-once", "--settle", "0"]
    old = os.umask(0o022)
    try:
        p = subprocess.run(
            [*watch, "--state", str(tmp_path / "w.db"), "--output", str(out), str(tmp_path / "src")],
            capture_output=True,
            env=env,
            timeout=60,
        )
    finally:
        os.umask(old)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert b'"epoch"' in out.read_bytes()
