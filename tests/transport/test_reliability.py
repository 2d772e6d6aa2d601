"""Failures: a server down and back, kill -9 of fc-transport, permanent errors and --retry-failed, per-path order
under many connections.  Against the real sshd (tests/servers/sshd.py), which these tests kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from fileconveyor.transporters import ssh_master
from tests.conftest import work_dir_for
from tests.servers.sshd import SshServer

from .conftest import event, fc, file_argv, jsonl, lines, sftp_spec, transport, tree


def _files(root: Path, n: int, size: int = 512) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    evs = []
    for i in range(n):
        rel = f"d{i % 7}/f{i:04d}.txt"
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(f"{i:08d}".encode() * (size // 8))
        evs.append(event(root, rel))
    return evs


def _wait(cond: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_server_down_then_back(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    src = tmp_path / "src"
    evs = _files(src, 20)
    server = sshd_server.process
    server.kill()
    errors = tmp_path / "transport.err"
    try:
        proc = subprocess.Popen(
            [*fc("fc-transport"), "-v", "--to", sftp_spec(sshd_server, sftp_dir), "--drain-timeout", "60"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors.open("wb"),
            env=env,
        )
        assert proc.stdin is not None
        proc.stdin.write(jsonl(evs))
        proc.stdin.flush()
        _wait(lambda: b"pausing" in errors.read_bytes())  # the events queue while the server is down
        assert proc.poll() is None
        assert tree(sftp_dir) == {}
    finally:
        server.start()
    out, _ = proc.communicate(timeout=90)  # closes stdin: the end of the input
    err = errors.read_bytes()
    assert proc.returncode == 0, err.decode()
    assert tree(sftp_dir) == tree(src)
    assert sorted(ev["rel"] for ev in lines(out)) == sorted(ev["rel"] for ev in evs)
    # Each failed attempt is one "retry in" message.  One per connection (4), then the lane is paused and
    # probed with one item: a few attempts cover the outage; retrying each event on its own would be 20 or more.
    attempts = err.count(b"refused")
    assert 1 <= attempts <= 8, err.decode()


def test_kill_9_mid_run_then_restart(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    src = tmp_path / "src"
    evs = _files(src, 600, 2048)
    argv, out = file_argv(sftp_spec(sshd_server, sftp_dir, connections="2"), tmp_path, evs)
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    _wait(lambda: out.exists() and out.read_bytes().count(b"\n") >= 20)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = out.read_bytes().count(b"\n")
    assert written < len(evs), "finished before the kill: make the test bigger"
    again = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert tree(sftp_dir) == tree(src)  # complete, every byte, no temporary file left over
    done = {ev["rel"] for ev in lines(out.read_bytes()) if ev["transported"] == "uploaded"}
    assert done == {ev["rel"] for ev in evs}  # duplicates allowed, loss not


def test_shared_ssh_login_killed_mid_run(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    """The ssh master under fc-transport's 4 connections killed -9 mid-run (transporters/ssh_master.py): the
    sessions on it fail as transient, their files stay queued, the connections log in again (a new master), and
    every file arrives whole, no temporary file left, each reported sent."""
    src = tmp_path / "src"
    evs = _files(src, 400, 32 << 10)
    argv, out = file_argv(sftp_spec(sshd_server, sftp_dir), tmp_path, evs)
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    where = ssh_master.control_dir()
    assert where is not None
    _wait(lambda: out.exists() and out.read_bytes().count(b"\n") >= 20)
    (sock,) = Path(where).glob(f"{proc.pid}-*")  # one destination, one login
    check = subprocess.run(
        ["ssh", "-F", "none", "-o", f"ControlPath={sock}", "-O", "check", "--", "h"], capture_output=True
    )
    master = int(check.stderr.decode().split("pid=")[1].split(")")[0])
    os.kill(master, signal.SIGKILL)
    written = out.read_bytes().count(b"\n")
    _, err = proc.communicate(timeout=120)
    assert written < len(evs), "finished before the kill: make the test bigger"
    assert proc.returncode == 0, err.decode()
    assert tree(sftp_dir) == tree(src)  # complete, every byte, no temporary file left over
    assert sorted(ev["rel"] for ev in lines(out.read_bytes())) == sorted(ev["rel"] for ev in evs)
    assert b"connection lost" in err  # the kill did land under transfers


def test_per_path_order_under_8_connections(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    src, work = tmp_path / "src", tmp_path / "state" / "process.db.work"  # fc-process's (FC_STATE_DIR)
    src.mkdir()
    work.mkdir(parents=True)
    paths = [f"p{i:02d}.txt" for i in range(24)]
    evs = []
    for version in range(1, 5):
        for i, rel in enumerate(paths):
            made = work_dir_for(work, src / rel, rel) / f"{rel}.{version}"
            made.write_bytes(f"{rel} v{version}".encode() + os.urandom(2000 * (i % 3)))
            kind = "deleted" if version == 4 and i % 2 else "modified"
            evs.append(event(src, rel, kind, file=str(made), size=1))
    result = transport(["--to", sftp_spec(sshd_server, sftp_dir, connections="8")], env, jsonl(evs), timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    expected = {
        rel: (work_dir_for(work, src / rel, rel) / f"{rel}.4").read_bytes() for i, rel in enumerate(paths) if i % 2 == 0
    }
    assert tree(sftp_dir) == expected
    outs = lines(result.stdout)
    for i, rel in enumerate(paths):
        seq = [ev["transported"] for ev in outs if ev["rel"] == rel]
        assert seq == ["uploaded"] * 3 + ["deleted" if i % 2 else "uploaded"]


def test_permanent_error_then_retry_failed(tmp_path: Path, env: dict[str, str]) -> None:
    src, cdn = tmp_path / "src", tmp_path / "cdn"
    evs = _files(src, 4)
    cdn.mkdir()
    (cdn / "d1").write_text("a file where a directory must go")
    args = ["--to", f"file://{cdn}", "--state", str(tmp_path / "t.db")]
    first = transport(args, env, jsonl(evs))
    assert first.returncode == 1  # some events failed
    outs = lines(first.stdout)
    failed = [ev for ev in outs if "error" in ev]
    assert [ev["rel"] for ev in failed] == ["d1/f0001.txt"]
    assert failed[0]["error_kind"] == "permanent" and "d1" in failed[0]["error"]
    assert len(outs) == 4 and tree(cdn)["d0/f0000.txt"] == (src / "d0/f0000.txt").read_bytes()
    # Said on stderr too, not only in the event: the file, then what to do.
    err = first.stderr.decode()
    assert "fc-transport: warning: not sent: " in err and "d1" in err, err
    assert "1 file(s) not sent" in err and "then run fc-transport --retry-failed" in err, err
    # not retried in a loop, nor on the next run...
    assert transport(args, env, b"").stdout == b""
    # ...until asked, once the cause is fixed
    (cdn / "d1").unlink()
    again = transport([*args, "--retry-failed"], env, b"")
    assert again.returncode == 0, again.stderr.decode()
    assert [(ev["rel"], ev["transported"]) for ev in lines(again.stdout)] == [("d1/f0001.txt", "uploaded")]
    assert tree(cdn) == tree(src)
    assert transport([*args, "--retry-failed"], env, b"").stdout == b""  # the failed list is empty now


def test_wrong_key_is_refused_at_start(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    """The login is tried before any event is read: exit 3 naming the server and the refusal, nothing taken in
    (the events stay with their writer), one attempt; the corrected run sends them all."""
    src = tmp_path / "src"
    evs = _files(src, 30)
    log = sshd_server.process.log
    before = log.read_text(errors="replace").count("Failed publickey")
    state = ["--state", str(tmp_path / "t.db")]
    wrong = sftp_spec(sshd_server, sftp_dir, key_file=str(sshd_server.wrong_key_file))
    result = transport(["--to", wrong, *state], env, jsonl(evs))
    err = result.stderr.decode()
    assert result.returncode == 3, err
    assert result.stdout == b""
    assert err.count("authentication refused") == 1 and f"127.0.0.1:{sshd_server.port}" in err, err
    assert "fc-transport: error: refused at start: sftp://" in err and "(publickey). Nothing was read" in err
    time.sleep(0.3)
    attempts = log.read_text(errors="replace").count("Failed publickey") - before
    assert 1 <= attempts <= 2  # the check's one login (ssh may offer the key twice): no storm
    fixed = transport(["--to", sftp_spec(sshd_server, sftp_dir), *state], env, jsonl(evs))
    assert fixed.returncode == 0, fixed.stderr.decode()
    assert len(lines(fixed.stdout)) == 30 and tree(sftp_dir) == tree(src)


def test_outage_longer_than_the_run(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    src = tmp_path / "src"
    evs = _files(src, 10)
    args = ["--to", sftp_spec(sshd_server, sftp_dir), "--state", str(tmp_path / "t.db")]
    sshd_server.process.kill()
    try:
        down = transport([*args, "--drain-timeout", "1"], env, jsonl(evs))
    finally:
        sshd_server.process.start()
    assert down.returncode == 4, down.stderr.decode()  # try again later: the work stays queued
    assert down.stdout == b"" and b"still waiting" in down.stderr
    back = transport(args, env, b"")  # no new input: the queued events flow now the server is back
    assert back.returncode == 0, back.stderr.decode()
    assert tree(sftp_dir) == tree(src)
    assert len(lines(back.stdout)) == 10


def test_trusting_an_unknown_host_is_said_as_a_warning(
    sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict
) -> None:
    """The paramiko engine's workers report like the stage: `fc-transport: warning: ...`, and -q silences it."""
    src = tmp_path / "src"
    evs = _files(src, 2)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    spec = sftp_spec(sshd_server, sftp_dir, known_hosts=str(empty), trust_unknown_host="yes", connections="1")
    result = transport(["--to", spec, "--state", str(tmp_path / "t.db")], env, jsonl(evs))
    assert result.returncode == 0, result.stderr.decode()
    err = result.stderr.decode()
    assert err.count("fc-transport: warning: trusting unknown host key of [127.0.0.1]:") == 1, err
    assert tree(sftp_dir) == tree(src)
    quiet = transport(["-q", "--to", spec, "--state", str(tmp_path / "q.db")], env, jsonl(evs))
    assert quiet.returncode == 0 and quiet.stderr == b"", quiet.stderr.decode()
