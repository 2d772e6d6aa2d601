"""Issue 16, review findings E and F: where ``fc-watch --follow-symlinks`` stops.

E: a symlinked directory whose target contains the source root (``parent -> ..``,
``rootl -> /``) walked the tree again and then the whole machine, publishing
fc-watch's own state files and /etc/shadow; one to /proc never ended.  Such links,
and links into a pseudo-filesystem, are refused with one warning naming them, in a
scan (one process and --jobs 3) and live (inotify, polling).
F: SIGTERM during a long scan was only looked at once the scan had ended: a walk that
does not end (/proc, or links fanning out) could only be stopped with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.security.test_watch_symlinks import MODES, OLD, Watch
from tests.watch.conftest import Launcher, fc, leak_mark  # noqa: F401 - fixtures
from tests.watch.harness import changes, expect, make_files, rel_of, write

REFUSED = "not followed"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def test_follow_symlinks_never_enters_a_link_to_an_ancestor_of_the_root(
    fc: Launcher,  # noqa: F811
    mode: str,
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"  # fc-watch's state files are in tmp_path too: the parent of the root
    make_files(site, ["a.css"], age_s=OLD)
    make_files(tmp_path / "elsewhere", ["ok.css"], age_s=OLD)
    os.symlink("..", site / "parent")  # contains the root
    os.symlink("/", site / "rootl")  # the whole machine
    os.symlink("/proc", site / "p")  # a pseudo-filesystem: /proc/self/root leads to / again
    os.symlink("../elsewhere", site / "assets")  # an ordinary followed directory: still entered
    w = Watch(fc, mode, site, "--follow-symlinks")
    w.first(expect("created", ["a.css", "assets/ok.css"]))
    refused = [line for line in w.all_stderr().splitlines() if REFUSED in line]
    for name in ("parent", "rootl", "p"):
        assert len([line for line in refused if f"{site / name}:" in line]) == 1, w.all_stderr()

    # a link to an ancestor made while watching, and one into the followed directory's parent
    w.then(
        lambda: (
            os.symlink("../..", site / "up"),
            os.symlink("..", tmp_path / "elsewhere" / "back"),
            write(site / "b.css"),
        ),
        expect("created", ["b.css"]),
    )
    assert not [ev for ev in w.events if rel_of(ev).split(b"/")[0] in (b"parent", b"rootl", b"p", b"up")]
    assert not [ev for ev in w.events if rel_of(ev).startswith(b"assets/back/")]


def _fan_out(root: Path, levels: int = 8, width: int = 10) -> None:
    """A tree whose walk with --follow-symlinks does not end in any test's time, from 80
    symlinks and no loop: d0 has links l0..l9 to d1, d1 to d2, ... (10**8 paths)."""
    for i in range(levels):
        make_files(root, [f"d{i}/f"], age_s=OLD)
        if i + 1 < levels:
            for j in range(width):
                os.symlink(f"../d{i + 1}", root / f"d{i}" / f"l{j}")


def _terminate_during_scan(root: Path, state: Path, *args: str) -> tuple[int, float, str]:
    """Start a --scan-once --follow-symlinks, SIGTERM it once it has sent a first event
    (or after 3 s), and return its exit status, the seconds it took to end, its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, str(ROOT / "bin" / "fc-watch"), "--scan-once", "--follow-symlinks", "--state", str(state)]
    p = subprocess.Popen(
        [*cmd, *args, "--source", f"s={root}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 3
        first = p.stdout.readline()  # a first event: the walk is under way (or it ended: b"")
        time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
        p.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = p.communicate(timeout=20)
        return p.returncode, time.monotonic() - sent, (first + err).decode(errors="replace")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_sigterm_stops_a_scan_that_does_not_end(tmp_path: Path, jobs: str) -> None:
    root = tmp_path / "site"
    _fan_out(root)
    rc, took, out = _terminate_during_scan(root, tmp_path / "w.db", "--jobs", jobs)
    assert rc == 143, out
    assert took < 5, f"{took:.1f}s after SIGTERM"


def test_sigterm_during_a_follow_symlinks_scan_with_a_link_to_proc(tmp_path: Path) -> None:
    # the reviewer's case: on the old code the walk of /proc went on after SIGTERM
    root = tmp_path / "s"
    make_files(root, ["a.css"], age_s=OLD)
    os.symlink("/proc", root / "p")
    rc, took, out = _terminate_during_scan(root, tmp_path / "st.db")
    assert rc in (0, 143), out  # /proc is not entered: the scan may well be over before the signal
    assert took < 5, f"{took:.1f}s after SIGTERM"
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [ev["rel"] for ev in events] == ["a.css"], out


def test_fc_watch_follow_symlinks_never_follows_a_link_to_an_ancestor_of_the_root(tmp_path: Path) -> None:
    # the reviewer's reproduction (issue 16, E): the state file is inside the link's target
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.css").write_bytes(b"a")
    (src / "parent").symlink_to(tmp_path)
    cmd = [sys.executable, str(ROOT / "bin" / "fc-watch"), "--source", f"s={src}", "--scan-once"]
    res = subprocess.run(
        [*cmd, "--follow-symlinks", "--state", str(tmp_path / "w.db")],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "lib")},
    )
    rels = [json.loads(x).get("rel") for x in res.stdout.splitlines()]
    assert not [r for r in rels if r.startswith("parent/")], rels
    assert res.returncode == 0 and rels == ["a.css"], res.stderr


def test_a_followed_link_repointed_to_an_ancestor_deletes_what_it_published(fc: Launcher, tmp_path: Path) -> None:  # noqa: F811
    # the scan's judgement of state rows it no longer walks (links.resolve) follows the same rule
    site = tmp_path / "site"
    make_files(site, ["a.css"], age_s=OLD)
    make_files(tmp_path / "elsewhere", ["ok.css"], age_s=OLD)
    os.symlink("../elsewhere", site / "x")
    first = fc.scan_once("--follow-symlinks", site)
    assert first.status == 0 and changes(first.events) == expect("created", ["a.css", "x/ok.css"]), first.stderr
    os.symlink("..", site / "x.new")
    os.replace(site / "x.new", site / "x")
    second = fc.scan_once("--follow-symlinks", site)
    assert second.status == 0, second.stderr
    assert changes(second.events) == expect("deleted", ["x/ok.css"]), second.events
    assert f"{site / 'x'}: a symlink to {tmp_path}, which contains the source root" in second.stderr
