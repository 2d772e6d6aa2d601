"""fc-conveyor's PID file in a directory others can write (/tmp, a shared /var/run): what another user put at its
path is not believed.  A FIFO made fc-conveyor (and --status) wait for ever before starting; a file of theirs
naming a live process of theirs called "conveyor" made every start exit 4 (already running), and named the
process that `kill -TERM $(cat PIDFILE)` kills."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fileconveyor.conveyor.pidfile import PidFile, running_pid
from tests.security.shared_dirs import as_other, made


def test_a_fifo_planted_as_the_pid_file_does_not_hold_fc_conveyor(tmp_path: Path) -> None:
    pid_file = made(tmp_path / "tmp") / "fc.pid"
    os.mkfifo(pid_file, 0o666)
    found: list[int | None] = []
    t = threading.Thread(target=lambda: found.append(running_pid(pid_file)), daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # blocked in open() until a writer comes: let it go, then fail
        os.close(os.open(pid_file, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("reading a FIFO planted as the PID file waited for a writer")
    assert found == [None]
    PidFile(pid_file).acquire()
    assert pid_file.read_text() == f"{os.getpid()}\n" and pid_file.is_file()


def test_a_pid_file_through_a_symlink_is_not_read(tmp_path: Path) -> None:
    d = made(tmp_path / "tmp")
    real = tmp_path / "real.pid"
    real.write_text(f"{os.getpid()}\n")
    (d / "fc.pid").symlink_to(real)  # to /dev/zero it would be read to the end of memory
    assert running_pid(d / "fc.pid") is None


def test_a_pid_file_another_user_wrote_does_not_stop_fc_conveyor(tmp_path: Path) -> None:
    pid_file = made(tmp_path / "tmp") / "fc.pid"
    theirs = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "conveyor"])
    try:
        pid_file.write_text(f"{theirs.pid}\n")
        as_other(pid_file)
        assert running_pid(pid_file) is None
        PidFile(pid_file).acquire()  # was: AlreadyRunning (exit 4), at every start
        assert pid_file.read_text() == f"{os.getpid()}\n"
        assert pid_file.stat().st_uid == os.geteuid()
    finally:
        theirs.kill()
        theirs.wait()


def test_our_own_pid_file_still_says_we_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "fc.pid"
    PidFile(pid_file).write()
    assert pid_file.read_text() == f"{os.getpid()}\n"
    # this test process is no fc-conveyor: only its liveness and our file were read
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "conveyor"])
    try:
        pid_file.write_text(f"{live.pid}\n")
        deadline = time.monotonic() + 5
        while b"conveyor" not in Path(f"/proc/{live.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # not exec'd yet
        assert running_pid(pid_file) == live.pid
    finally:
        live.kill()
        live.wait()
