"""A named FIFO that other users may open for reading loses files: each line read by such a process (``cat FIFO``
by any local user, when it is 0644, as plain ``mkfifo`` makes it under umask 022) is taken out of the FIFO
unseen, and the real reader, finding a gap in the writer's seqs, takes it for lines a filter in between dropped
(``tail -n``, grep) and acknowledges past them: the writer forgets them and never sends them again.  Measured
before the fix (fc-watch --scan-once of 300 files into a 0644 FIFO read by fc-filter and, as user nobody,
``head -c 30000``): fc-filter got 246 lines and acknowledged 300; a second fc-watch run sent nothing more.

So a writer makes a FIFO of its own unreadable by others before it opens it, and a stage reading one does at its
start (private.fifo_unreadable): whoever opens it for reading afterwards is our own user."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fileconveyor import private
from fileconveyor.delivery.writer import Output
from tests.conftest import RELAY, ROOT, require_tool, unavailable

WATCH = [sys.executable, str(ROOT / "bin" / "fc-watch")]
FILTER = [sys.executable, str(RELAY)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _fifo(path: Path, mode: int) -> Path:
    os.mkfifo(path)
    os.chmod(path, mode)  # whatever the umask
    return path


def test_a_fifo_we_write_into_is_made_unreadable_by_others_before_it_is_opened(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "out.fifo", 0o644)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    out = Output(str(fifo))
    assert out.open(lambda: False)
    assert _mode(fifo) == 0o600
    out.write(b"x\n")
    out.close()
    t.join(5)
    assert got == [b"x\n"]

    # stdout redirected into one (`fc-watch > FIFO`): tightened through the descriptor
    other = _fifo(tmp_path / "stdout.fifo", 0o664)
    fd = os.open(other, os.O_RDWR)  # holds both ends: no open blocks
    with os.fdopen(fd, "wb", closefd=True) as stdout:
        assert Output(None, stdout).open()
        assert _mode(other) == 0o620  # write access is left to the reader's own check (others_may_write)

    # an anonymous pipe is left as it is (0600 already); so is another user's FIFO (not ours to change)
    r, w = os.pipe()
    try:
        with os.fdopen(os.dup(w), "wb") as stdout:
            assert Output(None, stdout).open()
    finally:
        os.close(r)
        os.close(w)
    if os.geteuid() == 0:
        theirs = _fifo(tmp_path / "theirs.fifo", 0o644)
        os.chown(theirs, 65534, 65534)
        fd = os.open(theirs, os.O_RDWR)
        try:
            out = Output(str(theirs))
            assert out.open(lambda: False)
            out.close()
        finally:
            os.close(fd)
        assert _mode(theirs) == 0o644


def test_a_file_swapped_in_for_the_fifo_after_its_check_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a directory others may write, the FIFO can be replaced (here by a symlink to another file) between the
    # look at it and the change of its mode: the change must reach the FIFO looked at, never what replaced it.
    victim = tmp_path / "victim"
    victim.write_text("not ours to change")
    os.chmod(victim, 0o644)
    fifo = _fifo(tmp_path / "out.fifo", 0o644)
    held = os.open(fifo, os.O_PATH)  # the FIFO's inode, to see its mode once its name is gone
    real_stat, real_fstat = os.stat, os.fstat

    def swap_after(look, what):  # type: ignore[no-untyped-def]
        st = look(what)
        if stat.S_ISFIFO(st.st_mode) and os.path.lexists(fifo) and not os.path.islink(fifo):
            os.unlink(fifo)
            os.symlink(victim, fifo)
        return st

    monkeypatch.setattr(os, "stat", lambda p, *a, **k: swap_after(lambda x: real_stat(x, *a, **k), p))
    monkeypatch.setattr(os, "fstat", lambda fd: swap_after(real_fstat, fd))
    try:
        private.fifo_unreadable(fifo)
    finally:
        monkeypatch.undo()
    try:
        assert os.path.islink(fifo), "the swap did not happen: the test proves nothing"
        assert _mode(victim) == 0o644
        assert stat.S_IMODE(os.fstat(held).st_mode) == 0o600
    finally:
        os.close(held)


def test_fc_watch_into_a_fifo_others_could_read_leaves_it_unreadable_by_them(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for i in range(20):
        (site / f"f{i}.txt").write_text(str(i))
    fifo = _fifo(tmp_path / "events.fifo", 0o644)
    lines: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            lines.extend(f.read().splitlines())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    r = subprocess.run(
        [*WATCH, "--scan-once", "--output", str(fifo), "--state", str(tmp_path / "w.db"), str(site)],
        capture_output=True,
        timeout=60,
    )
    t.join(10)
    assert r.returncode == 0, r.stderr
    assert len(lines) == 20
    assert _mode(fifo) == 0o600


def test_a_stage_reading_a_fifo_others_could_read_makes_it_unreadable_by_them(tmp_path: Path) -> None:
    # the reader usually starts first: from then on no other user can open it to take lines out
    fifo = _fifo(tmp_path / "in.fifo", 0o644)
    filt = subprocess.Popen(
        [*FILTER, "--input", str(fifo), "--state", str(tmp_path / "f.db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while _mode(fifo) != 0o600 and time.monotonic() < deadline and filt.poll() is None:
            time.sleep(0.05)
        assert _mode(fifo) == 0o600
    finally:
        filt.terminate()  # a FIFO's input never ends
        _, err = filt.communicate(timeout=60)
    assert filt.returncode in (0, -15, 143), err


def test_a_fifo_another_users_process_opened_before_it_was_tightened_gets_no_acknowledgement(tmp_path: Path) -> None:
    # Made owner-only at our start, a FIFO stays readable through what another user opened before (a plain
    # `mkfifo` at boot, 0644, and their process waiting on it): what it takes out are gaps our reader would
    # acknowledge past.  Seen through /proc (all processes, as root): its writer gets no acknowledgement.
    if os.geteuid() != 0:
        unavailable("a process of another user needs root (CI runs as root)")
    fifo = _fifo(tmp_path / "events.fifo", 0o644)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    thief = subprocess.Popen([require_tool("sleep"), "60"], pass_fds=(fd,), user=65534)
    os.close(fd)
    site = tmp_path / "site"
    site.mkdir()
    for i in range(5):
        (site / f"f{i}.txt").write_text(str(i))
    passed = tmp_path / "filter.out"
    with passed.open("wb") as out:
        filt = subprocess.Popen(
            [*FILTER, "--input", str(fifo), "--state", str(tmp_path / "f.db")], stdout=out, stderr=subprocess.PIPE
        )
    try:
        watch = subprocess.run(
            [*WATCH, "--scan-once", "--output", str(fifo), "--state", str(tmp_path / "w.db"), str(site)],
            capture_output=True,
            timeout=120,
        )
        assert watch.returncode == 0, watch.stderr
        # fc-watch does not wait for our reader: the thief holds the FIFO open, so its open did not block, and
        # nothing acknowledges.  Stopped before it took the lines, fc-filter (under load, still starting) said
        # nothing and proved nothing: wait until it has passed them all on (a stop then acknowledges what it took)
        deadline = time.monotonic() + 60
        while passed.read_bytes().count(b"\n") < 5 and time.monotonic() < deadline and filt.poll() is None:
            time.sleep(0.05)
        assert passed.read_bytes().count(b"\n") == 5, passed.read_bytes()
    finally:
        filt.terminate()
        _, err = filt.communicate(timeout=60)
        thief.kill()
        thief.wait()
    assert f"has open for reading (pid {thief.pid}, uid 65534)".encode() in err, err
    with sqlite3.connect(tmp_path / "w.db") as db:
        assert db.execute("SELECT count(*) FROM acks").fetchone() == (0,)  # was: acknowledged past any gap
