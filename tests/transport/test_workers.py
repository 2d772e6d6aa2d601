"""The processes behind SFTP connections: with the paramiko engine a worker process per connection
(transporters/isolated.py), with the openssh engine an ssh process per connection.  Either killed mid-run loses
nothing, they die with fc-transport (even by kill -9), and Ctrl-C on the terminal stops the whole thing cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers.process import children
from tests.servers.sshd import SshServer

from .conftest import event, file_argv, jsonl, lines, sftp_spec, tree

ENGINES = ["paramiko", "openssh"]


def _helpers(pid: int, engine: str) -> list[int]:
    """fc-transport's worker processes (paramiko) or its ssh processes (openssh)."""
    found = []
    for child in children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if engine == "paramiko" and b"fileconveyor.transporters.isolated" in b" ".join(argv):
            found.append(child)
        if engine == "openssh" and argv[0].endswith(b"ssh") and argv[-1] == b"sftp":
            found.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(cond: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def _files(root: Path, n: int, size: int) -> list[dict]:
    evs = []
    for i in range(n):
        rel = f"d{i % 5}/f{i:04d}.bin"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(size))
        evs.append(event(root, rel))
    return evs


def _running(
    sshd: SshServer, dest: Path, tmp_path: Path, env: dict, engine: str, held_open: bool = False, **kw: object
) -> tuple:
    """fc-transport sending 300 files over 2 connections, 10 of them sent already: (src, events, argv, output
    file, process, its workers or ssh processes).  ``held_open``: the events come on its stdin, a pipe left open
    (communicate() closes it), so that it cannot finish and exit before the test acts, however late the test
    sees the 10 lines on a loaded machine."""
    src = tmp_path / "src"
    evs = _files(src, 300, 64 * 1024)
    argv, out = file_argv(sftp_spec(sshd, dest, connections="2", engine=engine), tmp_path, evs)
    if held_open:
        at = argv.index("--input")
        started = [*argv[:at], *argv[at + 2 :]]  # (the argv returned reads the file: a second run)
        proc = subprocess.Popen(started, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
        proc.stdin.write(jsonl(evs))
        proc.stdin.flush()
    else:
        proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
    _wait(lambda: out.exists() and out.read_bytes().count(b"\n") >= 10)
    return src, evs, argv, out, proc, _helpers(proc.pid, engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_killed_mid_run_loses_nothing(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict, engine: str
) -> None:
    # Its input held open (as in the Ctrl-C test below): it cannot have sent all 300 files and ended before the
    # kill, however late a loaded machine lets the test see its 10th line.
    src, evs, _, out, proc, workers = _running(sshd_server, sftp_dir, tmp_path, env, engine, held_open=True)
    assert len(workers) == 2, workers  # one per connection
    assert proc.poll() is None
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert out.read_bytes().count(b"\n") >= 10
    assert proc.returncode == 0, err.decode()
    # Said once, then retried with a fresh worker or ssh.
    assert (b"worker process ended" if engine == "paramiko" else b"connection lost") in err, err.decode()
    assert tree(sftp_dir) == tree(src)  # every byte, no temporary file left
    assert {ev["rel"] for ev in lines(out.read_bytes()) if ev.get("transported") == "uploaded"} == {
        ev["rel"] for ev in evs
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_workers_die_with_a_killed_fc_transport(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict, engine: str
) -> None:
    src, _, argv, _, proc, workers = _running(sshd_server, sftp_dir, tmp_path, env, engine, held_open=True)
    assert workers
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    _wait(lambda: not any(_alive(w) for w in workers), timeout=10)  # no orphan keeps a connection open
    again = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert tree(sftp_dir) == tree(src)


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_stops_workers_and_stage_cleanly(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict, engine: str
) -> None:
    # Its input held open: fc-transport cannot have ended by itself when the signal comes (it did, once, on a
    # loaded machine: all 300 files sent and exit 0 before the test saw its 10th line).  Usually uploads are in
    # progress then; at worst it is idle, waiting for input, which Ctrl-C must stop as cleanly.
    src, _, _, out, proc, workers = _running(
        sshd_server, sftp_dir, tmp_path, env, engine, held_open=True, start_new_session=True
    )
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole process group gets it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err, err.decode()
    _wait(lambda: not any(_alive(w) for w in workers), timeout=10)
    # What was uploaded is whole: no file with a partial content, no temporary name left behind.
    sent = tree(sftp_dir)
    assert all(content == (src / rel).read_bytes() for rel, content in sent.items())
    # And recorded: an upload that finished during the stop's grace period has its event (the next run would
    # otherwise send it again).
    reported = {ev["rel"] for ev in lines(out.read_bytes()) if ev.get("transported") == "uploaded"}
    assert set(sent) <= reported, sorted(set(sent) - reported)[:5]
