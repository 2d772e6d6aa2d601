"""A state directory that fills up: a clear error and exit status 4 ("try again
later"), a state file that is still sound, and nothing lost once space returns.

The small filesystem is a tmpfs mounted in a private mount namespace
(``unshare -Urm``), so the test needs no root and touches nothing outside."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from fileconveyor import events as E
from tests.conftest import RELAY, ROOT, unavailable

FILTER = f"{sys.executable} {RELAY}"


def events(n: int) -> bytes:
    out = []
    for i in range(n):
        e = {"v": 1, "id": f"id{i:05d}", "kind": "created", "source": "s", "root": "/r", "padding": "x" * 300}
        E.put_path(e, "path", f"/r/f{i}.css".encode())
        E.put_path(e, "rel", f"f{i}.css".encode())
        out.append(E.encode(e))
    return b"".join(out)


def require_namespaces() -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-Urm", "true"]).returncode != 0:
        unavailable("unshare -Urm (user and mount namespaces) is not available")


def test_disk_full_state_dir_is_a_clear_retry_and_loses_nothing(tmp_path: Path) -> None:
    require_namespaces()
    (tmp_path / "in.ndjson").write_bytes(events(4000))
    small = tmp_path / "small"
    small.mkdir()
    out = tmp_path / "out.ndjson"
    script = f"""
    set -u
    mount -t tmpfs -o size=400k tmpfs {small}
    {FILTER} --state {tmp_path}/a.db --input {tmp_path}/in.ndjson \\
      | {FILTER} --state {small}/b.db --output {out} 2> {tmp_path}/b1.err
    echo "first=${{PIPESTATUS[1]}}"
    python3 -c "import sqlite3; c = sqlite3.connect('{small}/b.db'); \
      print('integrity=' + c.execute('PRAGMA integrity_check').fetchone()[0])"
    mount -o remount,size=20m {small}
    # the same pipeline again: a file has no writer to re-send what the first run's
    # stage A read but had not committed when B stopped it

    {FILTER} --state {tmp_path}/a.db --input {tmp_path}/in.ndjson \\
      | {FILTER} --state {small}/b.db --output {out} 2> {tmp_path}/b2.err
    echo "second=${{PIPESTATUS[1]}}"
    """
    r = subprocess.run(["unshare", "-Urm", "bash", "-c", script], capture_output=True, text=True, timeout=120)
    report = r.stdout + r.stderr
    assert "first=4" in report, report + (tmp_path / "b1.err").read_text()
    err = (tmp_path / "b1.err").read_text()
    assert "disk is full" in err and "free some space" in err and "Traceback" not in err
    assert "integrity=ok" in report
    assert "second=0" in report, report + (tmp_path / "b2.err").read_text()
    got = {json.loads(line)["id"] for line in out.read_bytes().splitlines()}
    missing = {f"id{i:05d}" for i in range(4000)} - got
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"


def test_disk_full_work_dir_pauses_then_recovers_without_failing_events(tmp_path: Path) -> None:
    require_namespaces()
    site = tmp_path / "site"
    site.mkdir()
    lines = []
    for i in range(8):
        css = site / f"s{i}.css"
        css.write_text("".join(f".c{i}-{j} {{ color : red ; }}\n" for j in range(4000)))  # ~100 KB each
        e = {"v": 1, "id": f"id{i}", "kind": "created", "source": "s", "root": str(site), "size": css.stat().st_size}
        E.put_path(e, "path", str(css).encode())
        E.put_path(e, "rel", css.name.encode())
        lines.append(E.encode(e))
    (tmp_path / "in.ndjson").write_bytes(b"".join(lines))
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out.ndjson"
    process = f"{sys.executable} {ROOT / 'bin' / 'fc-process'}"
    script = f"""
    set -u
    mount -t tmpfs -o size=150k tmpfs {work}
    {process} --chain minify.CSS --jobs 2 --work-dir {work} --state {tmp_path}/p.db \\
      --input {tmp_path}/in.ndjson --output {out} 2> {tmp_path}/p.err &
    pid=$!
    sleep 3
    echo "while-full=$(wc -l < {out} 2>/dev/null || echo 0)"
    mount -o remount,size=20m {work}
    wait $pid
    echo "status=$?"
    """
    r = subprocess.run(["unshare", "-Urm", "bash", "-c", script], capture_output=True, text=True, timeout=240)
    report = r.stdout + r.stderr + (tmp_path / "p.err").read_text()
    assert "status=0" in report, report
    got = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(e["id"] for e in got) == [f"id{i}" for i in range(8)], report
    assert not [e for e in got if "error" in e], report  # a full disk is "later", not a failed file
    assert int(report.split("while-full=")[1].split()[0]) < 8, report  # it really was stuck on space
    assert "No space left" in report or "no space" in report.lower(), report
