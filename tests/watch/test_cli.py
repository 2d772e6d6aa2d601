"""fc-watch at its edges: a reader that goes away, bad directories, bad flags, a busy state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.watch.conftest import BACKENDS, Launcher
from tests.watch.harness import FC_WATCH, make_many


def test_scan_once_into_head_ends_quietly(fc: Launcher, tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_many(root, 2000, age_s=3600)  # far more than a pipe buffer (64 KiB) holds
    script = 'set -o pipefail; "$0" "$1" --scan-once --state "$2" "$3" | head -1'
    p = subprocess.run(
        ["bash", "-c", script, sys.executable, FC_WATCH, str(tmp_path / "s.db"), str(root)],
        capture_output=True,
        env=fc.env(),
        timeout=60,
    )
    assert p.stderr == b"", f"not quiet: {p.stderr.decode(errors='replace')}"
    assert p.returncode == 141, "exit status when the reader went away (128 + SIGPIPE)"
    (line,) = p.stdout.splitlines()
    assert json.loads(line)["kind"] == "created"


def test_nonexistent_directory(fc: Launcher, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    missing = tmp_path / "no such dir"
    for args in [(missing,), (tmp_path / "real", missing), ("--backend", "polling", missing)]:
        done = fc.scan_once(*args)
        assert done.status == 3, done.stderr
        assert f"{missing} does not exist" in done.stderr and "Traceback" not in done.stderr
        assert done.lines == []
    w = fc.start(missing, ready=False)  # live too
    assert w.wait_exit() == 3
    assert "does not exist" in w.stderr and not w.lines


def test_regular_file_as_source(fc: Launcher, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = fc.scan_once(tmp_path / "file")
    assert done.status == 3
    assert "is not a directory" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag", "DIR"],
        ["--interval", "soon", "DIR"],
        ["--settle", "-1", "DIR"],
        ["--open-wait", "nan", "DIR"],
        ["--backend", "carrier-pigeon", "DIR"],
        ["--source", "no-equals-sign"],
        ["--source", "a=DIR", "--source", "a=DIR"],
        [],
    ],
    ids=lambda a: " ".join(a) or "no-source",
)
def test_bad_flags_exit_2(fc: Launcher, tmp_path: Path, args: list[str]) -> None:
    argv = [a.replace("DIR", str(tmp_path)) for a in args]
    live = fc.start(*argv, ready=False)
    once = fc.scan_once(*argv)
    for status, stderr, lines in [(live.wait_exit(), live.stderr, live.lines), (once.status, once.stderr, once.lines)]:
        assert status == 2, stderr
        assert "fc-watch: error:" in stderr and "Traceback" not in stderr
        assert lines == []


def test_state_in_use_by_a_running_watcher(fc: Launcher, tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    w = fc.live(BACKENDS["inotify"], tmp_path / "site")
    done = fc.scan_once(tmp_path / "site")
    assert done.status == 4, done.stderr
    assert "in use" in done.stderr and "Traceback" not in done.stderr
    assert w.terminate() == 143
