"""SFTP connections run in worker processes (transporters/isolated.py): a worker killed mid-run loses nothing,
the workers die with fc-transport (even by kill -9), and Ctrl-C on the terminal stops the whole thing cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.servers.process import children
from tests.servers.sshd import SshServer

from .conftest import event, file_argv, lines, sftp_spec, tree

WORKER = b"fileconveyor.transporters.isolated"


def _workers(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        try:
            if WORKER in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
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


def _start(sshd: SshServer, dest: Path, tmp_path: Path, evs: list[dict], env: dict, **kw: object) -> tuple:
    argv, out = file_argv(sftp_spec(sshd, dest, connections="2"), tmp_path, evs)
    return argv, out, subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def test_a_worker_killed_mid_run_loses_nothing(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict
) -> None:
    src = tmp_path / "src"
    evs = _files(src, 300, 64 * 1024)
    _, out, proc = _start(sshd_server, sftp_dir, tmp_path, evs, env)
    _wait(lambda: out.exists() and out.read_bytes().count(b"\n") >= 10)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers  # one per connection
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert out.read_bytes().count(b"\n") >= 10
    assert proc.returncode == 0, err.decode()
    assert b"worker process ended" in err  # said once, then retried with a fresh worker
    assert tree(sftp_dir) == tree(src)  # every byte, no temporary file left
    assert {ev["rel"] for ev in lines(out.read_bytes()) if ev.get("transported") == "uploaded"} == {
        ev["rel"] for ev in evs
    }


def test_workers_die_with_a_killed_fc_transport(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict
) -> None:
    src = tmp_path / "src"
    evs = _files(src, 300, 64 * 1024)
    argv, out, proc = _start(sshd_server, sftp_dir, tmp_path, evs, env)
    _wait(lambda: out.exists() and out.read_bytes().count(b"\n") >= 10)
    workers = _workers(proc.pid)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait(lambda: not any(_alive(w) for w in workers), timeout=10)  # no orphan keeps a connection open
    again = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert tree(sftp_dir) == tree(src)


def test_ctrl_c_stops_workers_and_stage_cleanly(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict
) -> None:
    src = tmp_path / "src"
    evs = _files(src, 300, 64 * 1024)
    _, out, proc = _start(sshd_server, sftp_dir, tmp_path, evs, env, start_new_session=True)
    _wait(lambda: out.exists() and out.read_bytes().count(b"\n") >= 10)
    workers = _workers(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole process group gets it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err, err.decode()
    _wait(lambda: not any(_alive(w) for w in workers), timeout=10)
    # What was uploaded is whole: no file with a partial content, no temporary name left behind.
    sent = tree(sftp_dir)
    assert all(content == (src / rel).read_bytes() for rel, content in sent.items())
