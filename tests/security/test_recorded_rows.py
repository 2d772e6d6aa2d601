"""What a forged line into fc-record leaves in the synced-files database must not stop fc-verify.

Anyone who writes into fc-record's input (a stage of their own before it) chooses every field it records.  A ``path``
holding a NUL byte was recorded as given, and from then on every fc-verify run ended with a traceback (exit 5,
``stat: embedded null character in path``) before checking a single file: one line wedged verification for good.
So did a recorded ``url`` that is no URL (``http://[::1/x``: ``Invalid IPv6 URL``; ``file:///a%00b``).  Now fc-record
records no path that holds a NUL byte (no file is named so: reported, passed on, exit 1), and fc-verify reports a
row it cannot check as an ``error`` line and goes on with the others, whatever an older version or a hand edit left
in the database.  Real fc-record and fc-verify, run as commands on a real database."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from tests.conftest import ROOT

BIN = ROOT / "bin"


def _run(cmd: str, args: list[str], tmp_path: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, str(BIN / cmd), *args], input=stdin, capture_output=True, env=env, timeout=120
    )


def _site(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A source with a.css, a destination folder holding its copy, and the event fc-transport writes for it."""
    src, cdn = tmp_path / "src", tmp_path / "cdn"
    src.mkdir()
    cdn.mkdir()
    (src / "a.css").write_bytes(b"a { }\n")
    shutil.copyfile(src / "a.css", cdn / "a.css")
    st = (src / "a.css").stat()
    good = {"v": 1, "kind": "created", "source": "site", "root": str(src), "path": str(src / "a.css"), "rel": "a.css"}
    good.update(size=st.st_size, mtime_ns=str(st.st_mtime_ns), ino=st.st_ino, server="cdn", remote="a.css")
    good.update(url="file://" + quote(str(cdn / "a.css")), transported="uploaded")
    return src, cdn, good


def _forged(src: Path, good: dict) -> list[dict]:
    nul = {**good, "path": str(src / "a\0b.css"), "rel": "a\0b.css"}
    ipv6 = {**good, "path": str(src / "gone1.css"), "rel": "gone1.css", "url": "http://[::1/x"}
    file_nul = {**good, "path": str(src / "gone2.css"), "rel": "gone2.css", "url": "file:///a%00b"}
    return [nul, ipv6, file_nul]


def _verify(tmp_path: Path, db: Path, *extra: str) -> list[dict]:
    res = _run("fc-verify", ["--db", str(db), "--timeout", "5", *extra], tmp_path)
    err = res.stderr.decode(errors="replace")
    assert "Traceback" not in err and res.returncode == 1, err[-3000:]  # problems found, the run not ended by one
    assert ": 1 ok," in err, err  # the real file's row was checked, and is fine
    return [json.loads(x) for x in res.stdout.splitlines()]


def test_fc_record_does_not_record_a_path_with_a_nul_byte(tmp_path: Path) -> None:
    src, _cdn, good = _site(tmp_path)
    db = tmp_path / "synced.db"
    lines = b"".join(json.dumps(ev).encode() + b"\n" for ev in [_forged(src, good)[0], good])
    args = ["--db", str(db), "--state", str(tmp_path / "r.db"), "--drain-timeout", "5"]
    res = _run("fc-record", args, tmp_path, lines)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1 and "Traceback" not in err, err
    # refused where every stage reads its lines (events.decode): a bad line, reported with its number and skipped
    assert "input line 1: field path holds a NUL byte" in err, err
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT input_file FROM synced_files")] == [good["path"]]
    assert [json.loads(x)["path"] for x in res.stdout.splitlines()] == [good["path"]]


def test_fc_verify_reports_rows_it_cannot_check_and_checks_the_rest(tmp_path: Path) -> None:
    src, cdn, good = _site(tmp_path)
    db = tmp_path / "synced.db"
    args = ["--db", str(db), "--state", str(tmp_path / "r.db")]
    res = _run("fc-record", args, tmp_path, json.dumps(good).encode() + b"\n")
    assert res.returncode == 0, res.stderr.decode()
    # the rows an older fc-record wrote for the forged lines (it recorded them as given)
    with sqlite3.connect(db) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(synced_files)")]
        (row,) = conn.execute("SELECT * FROM synced_files").fetchall()
        for ev in _forged(src, good):
            values = dict(zip(cols, row, strict=True))
            values.update(input_file=ev["path"], url=ev["url"], rel=ev["rel"])
            marks = ",".join("?" * len(cols))
            conn.execute(f"INSERT INTO synced_files({','.join(cols)}) VALUES ({marks})", list(values.values()))
    by_url = _verify(tmp_path, db)
    assert sorted((r["problem"], r["check"]) for r in by_url) == [("error", "source")] + [("error", "url")] * 2
    assert good["path"] not in {r["path"] for r in by_url}
    by_stat = _verify(tmp_path, db, "--to", "file://" + quote(str(cdn)) + "?name=cdn")
    assert sorted(r["problem"] for r in by_stat) == ["error", "stale", "stale"], by_stat  # (stat needs no URL)
    repairs = _verify(tmp_path, db, "--repair", "--to", "file://" + quote(str(cdn)) + "?name=cdn")
    assert sorted(e["rel"] for e in repairs) == ["gone1.css", "gone2.css"]  # their deletions; nothing for the rest


def test_a_work_file_name_with_a_nul_byte_is_no_failure_of_fc_record(tmp_path: Path) -> None:
    # fc-record stats an event's ``file`` for the size sent: a NUL byte there was an "unexpected failure" (the
    # runner's path for a stage's bug, the event passed on as an internal error); now a bad line like any other
    _src, _cdn, good = _site(tmp_path)
    db = tmp_path / "synced.db"
    args = ["--db", str(db), "--state", str(tmp_path / "r.db"), "--drain-timeout", "5"]
    lines = json.dumps({**good, "file": "/tmp/a\0b.css"}).encode() + b"\n" + json.dumps(good).encode() + b"\n"
    res = _run("fc-record", args, tmp_path, lines)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1 and "unexpected failure" not in err, err
    assert "input line 1: field file holds a NUL byte" in err, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT input_file FROM synced_files").fetchall() == [(good["path"],)]
