"""A state file's ``.lock`` in a directory others may write (``--state /tmp/x.db``): the stage truncates it and
writes its pid there.  It was opened following symlinks: another user's link planted at that name made the stage
overwrite the file it named (measured: the victim held the stage's pid, and nothing else, afterwards).  Now a
link there, a file another user owns, or anything but a regular file is refused (exit 3) and left as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.conveyor.test_config import minimal, write
from tests.security.shared_dirs import as_other, made

LINE = b'{"v":1,"kind":"created","source":"s","root":"/tmp","path":"/tmp/x.txt","rel":"x.txt"}\n'


def _filter(state: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-filter"), "--state", str(state)],
        input=LINE,
        capture_output=True,
        timeout=60,
    )


def test_a_symlink_planted_as_the_state_lock_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = made(tmp_path / "tmp") / "f.db"
    lock = Path(f"{state}.lock")
    lock.symlink_to(victim)
    if os.geteuid() == 0:
        as_other(lock)  # another user's link, as in /tmp
    r = _filter(state)
    assert r.returncode == 3, r.stderr
    assert b"fc-filter: error: lock file " in r.stderr and b"f.db.lock is a symlink; remove it" in r.stderr, r.stderr
    assert victim.read_text() == "precious\n"  # was: the stage's pid, the rest truncated
    assert r.stdout == b""


@pytest.mark.parametrize("what", ["file", "fifo"])
def test_a_state_lock_another_user_made_first_is_refused(tmp_path: Path, what: str) -> None:
    # Theirs, they could hold its flock (every start: "already running") and write there the pid the message
    # tells you to kill.
    state = made(tmp_path / "tmp") / "f.db"
    lock = Path(f"{state}.lock")
    if what == "fifo":
        os.mkfifo(lock, 0o666)
    else:
        lock.write_text("1\n")
        lock.chmod(0o666)
    as_other(lock)
    r = _filter(state)
    assert r.returncode == 3, r.stderr
    assert b"lock file" in r.stderr and b"belongs to another user (uid 65534)" in r.stderr, r.stderr
    if what == "file":
        assert lock.read_text() == "1\n"


def test_a_symlink_planted_as_fc_conveyors_state_directory_lock_is_not_written_through(tmp_path: Path) -> None:
    # fc-conveyor's own lock (STATE_DIR/conveyor.lock), truncated and given its pid the same way.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state_dir = made(tmp_path / "tmp")
    (state_dir / "conveyor.lock").symlink_to(victim)
    if os.geteuid() == 0:
        as_other(state_dir / "conveyor.lock")
    conf = write(tmp_path, minimal())
    argv = [
        str(conf),
        "--state-dir",
        str(state_dir),
        "--log-file",
        str(tmp_path / "log"),
        "--pid-file",
        str(tmp_path / "pid"),
    ]
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "fc-conveyor"), *argv], stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it ran: stop it, then fail on what it did
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert victim.read_text() == "precious\n"  # was: fc-conveyor's pid, the rest truncated
    assert proc.returncode == 3, err
    assert b"ERROR    - PERSISTENT_DATA_DB (--state-dir): lock file " in err and b"is a symlink" in err, err
