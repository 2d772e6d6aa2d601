"""Files of ours at paths in a directory others may write (``--state /tmp/x.db``, ``--output /tmp/e.jsonl``).

A state file's ``.lock`` (and fc-conveyor's ``conveyor.lock``) is truncated and given the pid, an output file
appended to: both were opened following symlinks, and another user's link planted at that name made the stage
overwrite (measured: the victim held the stage's pid, and nothing else) or append to the file it named.  Now a
lock that is a link, another user's file or no regular file is refused (exit 3) and left as it is, and an output
path goes through a symlink only as the kernel's fs.protected_symlinks would (private.open_append)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT
from tests.conveyor.test_config import minimal, write
from tests.security.shared_dirs import PRECIOUS, as_other, made, planted

LINE = b'{"v":1,"kind":"created","source":"s","root":"/tmp","path":"/tmp/x.txt","rel":"x.txt"}\n'


def _filter(state: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(RELAY), "--state", str(state)],
        input=LINE,
        capture_output=True,
        timeout=60,
    )


def test_a_symlink_planted_as_the_state_lock_is_not_written_through(tmp_path: Path) -> None:
    victim, lock = planted(tmp_path, "f.db.lock")
    r = _filter(lock.parent / "f.db")
    assert r.returncode == 3, r.stderr
    assert b"fc-relay: error: lock file " in r.stderr and b"f.db.lock is a symlink; remove it" in r.stderr, r.stderr
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


def _conveyor(conf: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    """fc-conveyor running ``conf`` with its state in ``state_dir``, its log and PID file next to ``conf``."""
    d = conf.parent
    argv = [str(conf), "--state-dir", str(state_dir), "--log-file", str(d / "log"), "--pid-file", str(d / "pid")]
    return subprocess.Popen([sys.executable, str(ROOT / "bin" / "fc-conveyor"), *argv], stderr=subprocess.PIPE)


def test_a_symlink_planted_as_fc_conveyors_state_directory_lock_is_not_written_through(tmp_path: Path) -> None:
    # fc-conveyor's own lock (STATE_DIR/conveyor.lock), truncated and given its pid the same way.
    victim, link = planted(tmp_path, "conveyor.lock")
    state_dir = link.parent
    conf = write(tmp_path, minimal())
    proc = _conveyor(conf, state_dir)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it ran: stop it, then fail on what it did
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert victim.read_text() == "precious\n"  # was: fc-conveyor's pid, the rest truncated
    assert proc.returncode == 3, err
    assert b"ERROR    - PERSISTENT_DATA_DB (--state-dir): lock file " in err and b"is a symlink" in err, err


def test_an_output_file_through_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    # `--output /tmp/events.jsonl`: another user's link there made the stage append its lines to what it named.
    victim, link = planted(tmp_path, "events.jsonl")
    argv = ["--state", str(tmp_path / "f.db"), "--output", str(link)]
    r = subprocess.run([sys.executable, str(RELAY), *argv], input=LINE, capture_output=True)
    assert victim.read_text() == "precious\n"  # was: precious, then our line
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith(b"fc-relay: error: --output: ") and b"will not follow symlink" in r.stderr, r.stderr


def test_an_output_file_through_our_own_link_in_our_directory_is_written(tmp_path: Path) -> None:
    target = tmp_path / "spool" / "events.jsonl"
    target.parent.mkdir()
    mine = made(tmp_path / "mine", 0o755)
    (mine / "events.jsonl").symlink_to(target)
    argv = ["--state", str(tmp_path / "f.db"), "--output", str(mine / "events.jsonl")]
    r = subprocess.run([sys.executable, str(RELAY), *argv], input=LINE, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert b'"rel":"x.txt"' in target.read_bytes()


def test_fc_conveyors_status_and_config_marks_are_not_written_through_planted_links(tmp_path: Path) -> None:
    # STATE_DIR/conveyor-status.json and config.json are written as NAME.tmp renamed over NAME: guessable names,
    # at which another user's links made fc-conveyor truncate and overwrite the files they named.
    victim, link = planted(tmp_path, "conveyor-status.json.tmp")
    state_dir = link.parent
    other = tmp_path / "victim2"
    other.write_text(PRECIOUS)
    (state_dir / "config.tmp").symlink_to(other)
    conf = write(tmp_path, minimal())
    proc = _conveyor(conf, state_dir)
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "conveyor-status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert victim.read_text() == PRECIOUS and other.read_text() == PRECIOUS  # was: the status, the config mark
    assert json.loads((state_dir / "conveyor-status.json").read_text())["pid"] == proc.pid, err
    assert json.loads((state_dir / "config.json").read_text())["config"] == str(conf.resolve())
    assert not (state_dir / "config.tmp").exists()


@pytest.mark.parametrize("whose", ["another user's", "world-writable"])
def test_state_files_in_a_directory_others_may_rearrange_are_refused(tmp_path: Path, whose: str) -> None:
    # Whoever may rename and delete entries there can take our state file (its queue: files never sent) away, or
    # put another in its place between two opens; the file checks see one moment.  /tmp (sticky) stays usable.
    d = made(tmp_path / "shared", 0o755 if whose == "another user's" else 0o777)
    if whose == "another user's":
        as_other(d)
    r = _filter(d / "f.db")
    assert r.returncode == 3, r.stderr
    want = b"belongs to another user (uid 65534)" if whose == "another user's" else b"can be written by anyone"
    assert r.stderr.startswith(b"fc-relay: error: state file ") and want in r.stderr, r.stderr
    assert not (d / "f.db").exists()
    r = _filter(made(tmp_path / "tmp") / "f.db")
    assert r.returncode == 0, r.stderr


def test_fc_conveyor_refuses_a_state_directory_anyone_may_rearrange(tmp_path: Path) -> None:
    state_dir = made(tmp_path / "shared", 0o777)
    proc = _conveyor(write(tmp_path, minimal()), state_dir)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it ran: stop it, then fail
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert b"PERSISTENT_DATA_DB (--state-dir): directory " in err and b"can be written by anyone" in err, err


@pytest.mark.parametrize("what", ["a symlink to a FIFO", "a FIFO", "world-writable"])
def test_a_state_directorys_config_mark_that_is_no_file_of_ours_stops_fc_conveyor(tmp_path: Path, what: str) -> None:
    # STATE_DIR/config.json says which config the state directory belongs to, and decides which state directory
    # a moved config takes over.  It was read following links, whatever it was: a link to a FIFO (or a FIFO)
    # made fc-conveyor wait at its start for ever, a link to another user's file let them choose what it says.
    state_dir = made(tmp_path / "state", 0o700)
    mark = state_dir / "config.json"
    if what == "a symlink to a FIFO":
        os.mkfifo(tmp_path / "fifo")
        mark.symlink_to(tmp_path / "fifo")
    elif what == "a FIFO":
        os.mkfifo(mark)
    else:
        mark.write_text("{}\n")
        mark.chmod(0o666)
    conf = write(tmp_path, minimal())
    proc = _conveyor(conf, state_dir)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it waits on the FIFO (or runs): stop it, then fail
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    said = {
        "a symlink to a FIFO": b"config.json is a symlink",
        "a FIFO": b"config.json is not a regular file",
        "world-writable": b"config.json can be written by other users (mode 666)",
    }[what]
    # (once running, fc-conveyor says everything in its log's format, on stderr too, as the original did)
    assert b"ERROR" in err and b"state directory " in err and said in err, err


def test_fc_conveyor_status_is_not_held_up_by_a_link_at_its_status_file(tmp_path: Path) -> None:
    # `fc-conveyor --status` read STATE_DIR/conveyor-status.json following links: one to a FIFO made it wait for
    # ever.  What is no regular file of ours there is taken for no status at all.
    state_dir = made(tmp_path / "state", 0o700)
    os.mkfifo(tmp_path / "fifo")
    (state_dir / "conveyor-status.json").symlink_to(tmp_path / "fifo")
    conf = write(tmp_path, minimal())
    argv = [str(conf), "--state-dir", str(state_dir), "--pid-file", str(tmp_path / "pid"), "--status", "--json"]
    r = subprocess.run([sys.executable, str(ROOT / "bin" / "fc-conveyor"), *argv], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert all(s["state"] == "not running" for s in json.loads(r.stdout)["stages"]), r.stdout
