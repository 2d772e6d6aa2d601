"""A new user's first mistakes with ``fc-transport --to`` and ``--config`` cost a retry, never files: each is a
configuration error at start (exit 3, ``fc-transport: error: ...`` saying what to write), before any event is read,
so that after ``fc-watch --scan-once SITE | fc-transport --to TYPO`` the corrected run still gets every file.
Real fc-watch, real fc-transport, a real folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def fc(cmd: str) -> list[str]:
    return [sys.executable, str(ROOT / "bin" / cmd)]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}


def pipeline(site: Path, env: dict[str, str], *transport: str) -> tuple[list[int], list[dict], str]:
    """fc-watch --scan-once SITE | fc-transport ARGS: the exit statuses, fc-transport's events and stderr."""
    w = subprocess.Popen([*fc("fc-watch"), "--scan-once", str(site)], stdout=subprocess.PIPE, env=env)
    assert w.stdout is not None
    t = subprocess.run([*fc("fc-transport"), *transport], stdin=w.stdout, capture_output=True, env=env, timeout=60)
    w.stdout.close()
    w.wait(60)
    return [w.returncode, t.returncode], [json.loads(line) for line in t.stdout.splitlines()], t.stderr.decode()


@pytest.mark.parametrize(
    "to, said",
    [
        # a scheme one letter off: the scheme to write, not the plugin it names (symlink_or_copy)
        ("fle:///DEST", "unknown transporter 'fle'; did you mean file? available: symlink_or_copy (file), ftp (ftps)"),
        ("ftpp://host/dir", "unknown transporter 'ftpp'; did you mean ftp or sftp?"),
        # no host: tried as host "" before, "starting anyway", the files queued for a server that cannot exist
        ("sftp:///DEST", "sftp:///DEST: no host: write sftp://user@HOST/dir"),
        ("ftp:///DEST", "ftp:///DEST: no host: write ftp://user@HOST/dir"),
        ("ftps://me@/DEST", "ftps://me@/DEST: no host: write ftps://user@HOST/dir"),
    ],
)
def test_a_mistyped_to_is_refused_at_start_and_the_corrected_run_sends_everything(
    tmp_path: Path, env: dict[str, str], to: str, said: str
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for name in ("a.css", "b.js"):
        (site / name).write_bytes(name.encode())
    dest = tmp_path / "dest"
    status, out, err = pipeline(site, env, "--to", to.replace("DEST", str(dest)))
    assert status[1] == 3 and out == [], err
    assert f"fc-transport: error: {said.replace('DEST', str(dest))}" in err, err
    status, out, err = pipeline(site, env, "--to", f"file://{dest}")
    assert status == [0, 0], err
    assert sorted(ev["rel"] for ev in out) == ["a.css", "b.js"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.css", "b.js"]


def test_a_config_file_without_its_to_line_names_the_file_and_its_keys(tmp_path: Path, env: dict[str, str]) -> None:
    conf = tmp_path / "cdn.conf"
    conf.write_text(f"too = file://{tmp_path}/dest\nurl = http://cdn.example/\n")
    p = subprocess.run([*fc("fc-transport"), "--config", str(conf)], input=b"", capture_output=True, env=env)
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert f"fc-transport: error: no destination: {conf} has no 'to = URL' line (its keys: too, url)" in err, err


def test_status_reads_a_state_file_given_without_the_destinations(tmp_path: Path, env: dict[str, str]) -> None:
    """fc-transport --status --state FILE said "no destination: give --to URL": the state file alone is enough."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.css").write_bytes(b"a")
    state = tmp_path / "t.db"
    status, out, err = pipeline(site, env, "--to", f"file://{tmp_path}/dest", "--state", str(state))
    assert status == [0, 0] and len(out) == 1, err
    p = subprocess.run([*fc("fc-transport"), "--status", "--state", str(state)], capture_output=True, env=env)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().startswith(f"{state}: 0 queued"), p.stdout.decode()
    p = subprocess.run([*fc("fc-transport"), "--status"], capture_output=True, env=env)
    assert p.returncode == 2, p.stderr.decode()
    assert "fc-transport: error: --status: give the --to options the stage runs with" in p.stderr.decode()
