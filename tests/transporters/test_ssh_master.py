"""The shared SSH login of the sftp transporter (transporters/ssh_master.py), against the real sshd: one login for
a destination's connections, never one for two command lines, a private socket directory, and a master that
dies: its sessions fail as transient, nothing half-sent is published, the next connection logs in again."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fileconveyor.transporters import (
    AuthError,
    PermanentError,
    TransientError,
    for_destination,
    parse_destination,
    ssh_master,
)
from tests.servers.process import ServerProcess, free_port
from tests.servers.sshd import SSHD, SshServer, _keygen

from .conftest import Backend

LOGIN = "Accepted publickey"  # sshd's line for each login (LogLevel VERBOSE)


def _logins(server: ServerProcess) -> int:
    return server.log.read_text(errors="replace").count(LOGIN)


def _local(tmp_path: Path, data: bytes, name: str = "src") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _master_pid(path: str) -> int:
    """The pid of the master answering at the control socket ``path`` (its own word: SO_PEERCRED would name the
    process that made the socket, which forked the master into the background and exited)."""
    out = subprocess.run(
        ["ssh", "-F", "none", "-o", f"ControlPath={path}", "-O", "check", "--", "h"], capture_output=True
    )
    said = out.stderr.decode()
    assert out.returncode == 0 and "pid=" in said, said
    return int(said.split("pid=")[1].split(")")[0])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"  # a zombie: dead, its parent not told yet
    except OSError:
        return True


def _wait_for(cond: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_connections_to_one_destination_share_one_login(sftp_backend: Backend, tmp_path: Path) -> None:
    """Four connections, one login (one key exchange, one key check); each still its own SFTP session: files sent
    side by side arrive whole.  The last connection closed ends the master."""
    server = sftp_backend.server
    assert server is not None
    before = _logins(server)
    tps = [sftp_backend.make() for _ in range(4)]
    data = [os.urandom(300_000 + i) for i in range(4)]
    threads = [
        threading.Thread(target=tp.upload, args=(_local(tmp_path, d, f"s{i}"), f"f{i}".encode()))
        for i, (tp, d) in enumerate(zip(tps, data, strict=True))
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert [(sftp_backend.files / f"f{i}").read_bytes() for i in range(4)] == data
    _wait_for(lambda: _logins(server) > before)
    time.sleep(0.2)
    assert _logins(server) == before + 1
    master = tps[0].master  # type: ignore[attr-defined]
    assert master is not None and all(tp.master is master for tp in tps)  # type: ignore[attr-defined]
    pid = _master_pid(master.path)
    for tp in tps[:3]:
        tp.close()
    assert _master_pid(master.path) == pid  # closing sessions leaves the login to the others
    tps[3].upload(_local(tmp_path, b"still there"), b"last")
    tps[3].close()
    _wait_for(lambda: _gone(pid))
    assert not os.path.exists(master.path)


def test_share_login_no_logs_in_per_connection(sftp_backend: Backend, tmp_path: Path) -> None:
    server = sftp_backend.server
    assert server is not None
    before = _logins(server)
    tps = [sftp_backend.make(share_login="no") for _ in range(2)]
    for i, tp in enumerate(tps):
        tp.upload(_local(tmp_path, b"x"), f"f{i}".encode())
        assert tp.master is None and not any("ControlPath" in a for a in tp.pipe.proc.args)  # type: ignore[attr-defined]
    _wait_for(lambda: _logins(server) >= before + 2)


def test_control_socket_directory_is_private(sftp_backend: Backend, tmp_path: Path) -> None:
    tp = sftp_backend.make()
    tp.connect()
    master = tp.master  # type: ignore[attr-defined]
    assert master is not None
    d = os.path.dirname(master.path)
    st = os.lstat(d)
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700 and not os.path.islink(d)
    assert f"ControlPath={master.path}" in tp.pipe.proc.args  # type: ignore[attr-defined]


def test_a_directory_others_could_use_is_never_the_control_directory(tmp_path: Path) -> None:
    """A directory made first by someone else, or open to others, or a link at the name: not used."""
    name = f"fc-ssh-{os.geteuid()}"
    ours = tmp_path / "ours"
    ours.mkdir()
    made = ssh_master.private_dir(str(ours))
    assert made == str(ours / name) and os.stat(made).st_mode & 0o777 == 0o700
    assert ssh_master.private_dir(str(ours)) == made  # found again
    loose = tmp_path / "loose"
    (loose / name).mkdir(parents=True)
    (loose / name).chmod(0o755)
    assert ssh_master.private_dir(str(loose)) is None
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / name).symlink_to(made)  # a private directory of ours, but reached through a link someone put there
    assert ssh_master.private_dir(str(linked)) is None
    if os.geteuid() == 0:  # another user's directory, 0700 as ours would be
        theirs = tmp_path / "theirs"
        (theirs / name).mkdir(parents=True, mode=0o700)
        os.chown(theirs / name, 65534, 65534)
        assert ssh_master.private_dir(str(theirs)) is None


def test_a_planted_directory_leaves_the_socket_elsewhere(
    sftp_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    (runtime / f"fc-ssh-{os.geteuid()}").mkdir(parents=True)
    (runtime / f"fc-ssh-{os.geteuid()}").chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(ssh_master, "_dir", None)  # look again
    tp = sftp_backend.make()
    tp.upload(_local(tmp_path, b"x"), b"x")
    master = tp.master  # type: ignore[attr-defined]
    assert master is not None and not master.path.startswith(str(runtime))
    tp.close()
    monkeypatch.setattr(ssh_master, "_dir", (os.getpid(), None))  # nowhere private: each connection alone
    tp = sftp_backend.make()
    tp.upload(_local(tmp_path, b"y"), b"y")
    assert tp.master is None  # type: ignore[attr-defined]
    assert (sftp_backend.files / "y").read_bytes() == b"y"


def _sshd(d: Path, base: SshServer, authorized_keys: str) -> ServerProcess:
    """An sshd like the session's, with its own authorized_keys."""
    port = free_port()
    (d / "authorized_keys").write_text(authorized_keys)
    config = (base.known_hosts.parent / "sshd_config").read_text().splitlines()
    keep = [line for line in config if not line.startswith(("Port", "PidFile", "AuthorizedKeysFile"))]
    extra = [f"Port {port}", f"PidFile {d / 'pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}"]
    (d / "sshd_config").write_text("\n".join([*keep, *extra]) + "\n")
    (d / "known_hosts").write_text(base.known_hosts.read_text().replace(f"]:{base.port} ", f"]:{port} "))
    server = ServerProcess("sshd", [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], port, d / "log")
    server.start()
    return server


def test_two_keys_never_share_a_login(sshd_server: SshServer, tmp_path: Path) -> None:
    """Same user, host and port (ssh's %C would give one socket), another key: another login.  The second key
    may only read (its authorized_keys line forces a read-only SFTP server): through the first key's login its
    upload would have gone through."""
    reader = tmp_path / "reader_key"
    _keygen(reader)
    keys = sshd_server.key_file.with_suffix(".pub").read_text()
    keys += f'restrict,command="internal-sftp -R" {reader.with_suffix(".pub").read_text()}'
    server = _sshd(tmp_path, sshd_server, keys)
    try:
        root = tmp_path / "files"
        root.mkdir()
        base = {"known_hosts": str(tmp_path / "known_hosts"), "agent": "no", "timeout": "10"}

        def make(key: Path):  # type: ignore[no-untyped-def]
            query = urlencode({**base, "key_file": str(key)})
            return for_destination(
                parse_destination(f"sftp://{sshd_server.user}@127.0.0.1:{server.port}{root}?{query}")
            )

        writer_tp, reader_tp = make(sshd_server.key_file), make(reader)
        try:
            writer_tp.upload(_local(tmp_path, b"w"), b"w.txt")
            with pytest.raises(PermanentError, match="ermission denied"):
                reader_tp.upload(_local(tmp_path, b"r"), b"r.txt")
            assert not (root / "r.txt").exists() and (root / "w.txt").read_bytes() == b"w"
            assert writer_tp.master.path != reader_tp.master.path  # type: ignore[attr-defined]
            log = server.log.read_text()
            prints = {
                line.rsplit(" ", 1)[-1] for line in log.splitlines() if LOGIN in line
            }  # the two keys' fingerprints
            assert len(prints) == 2, log
        finally:
            writer_tp.close()
            reader_tp.close()
    finally:
        server.stop()


def test_refused_key_is_one_attempt_and_the_error_of_the_login(sftp_backend: Backend, tmp_path: Path) -> None:
    """The master's login refused: the connection fails with what ssh said, and no session logs in after it."""
    server = sftp_backend.server
    assert server is not None and sftp_backend.wrong_credentials is not None
    before = server.log.read_text(errors="replace").count("Failed publickey")
    tps = [sftp_backend.make(**sftp_backend.wrong_credentials) for _ in range(3)]
    errors: list[BaseException] = []

    def connect(tp: object) -> None:
        try:
            tp.connect()  # type: ignore[attr-defined]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=connect, args=(tp,)) for tp in tps]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(errors) == 3 and all(isinstance(e, AuthError) and "refused" in str(e) for e in errors), errors
    time.sleep(0.3)
    # All three waited for the one login: it was refused once for all of them.
    assert server.log.read_text(errors="replace").count("Failed publickey") == before + 1


def test_master_killed_mid_transfer(sftp_backend: Backend, tmp_path: Path) -> None:
    """The login under two connections dies (killed -9) while one sends: that upload fails as transient, its
    temporary file is never published; both connections log in again (a new master) and send."""
    tp, other = sftp_backend.make(), sftp_backend.make()
    tp.upload(_local(tmp_path, b""), b"first")
    other.upload(_local(tmp_path, b""), b"second")
    master = tp.master  # type: ignore[attr-defined]
    assert master is not None and other.master is master  # type: ignore[attr-defined]
    pid = _master_pid(master.path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    chunk = os.urandom(1 << 20)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            tp.upload(fifo, b"big.bin")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    with open(fifo, "wb") as w:
        for _ in range(4):
            w.write(chunk)
        _wait_for(lambda: sum(p.stat().st_size for p in sftp_backend.files.glob(".fc-*")) >= 1 << 20)
        os.kill(pid, signal.SIGKILL)
        try:
            for _ in range(8):
                w.write(chunk)
        except BrokenPipeError:
            pass
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TransientError), errors
    assert not (sftp_backend.files / "big.bin").exists()
    data = _local(tmp_path, chunk * 3, "again")
    tp.upload(data, b"big.bin")  # a new master: the dead one's socket is left behind, refusing
    other.upload(data, b"other.bin")
    assert _master_pid(master.path) != pid
    want = hashlib.sha256(chunk * 3).hexdigest()
    for name in ("big.bin", "other.bin"):
        assert hashlib.sha256((sftp_backend.files / name).read_bytes()).hexdigest() == want


def test_a_killed_session_leaves_the_master_to_the_others(
    sftp_backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One connection's ssh killed (a crashed session): that connection starts a new session on its next
    operation, and says so; the login, and the other connection on it, go on."""
    tp, other = sftp_backend.make(), sftp_backend.make()
    tp.upload(_local(tmp_path, b"a"), b"a")
    other.upload(_local(tmp_path, b"b"), b"b")
    pid = _master_pid(tp.master.path)  # type: ignore[attr-defined]
    dead = tp.pipe.proc  # type: ignore[attr-defined]
    dead.kill()
    dead.wait()
    with caplog.at_level("WARNING", logger="fileconveyor"):
        tp.upload(_local(tmp_path, b"c"), b"c")
    assert "connection lost while idle" in caplog.text  # (fc-transport: warning: ..., as a retry's would be)
    other.upload(_local(tmp_path, b"d"), b"d")
    assert tp.pipe.proc is not dead and _master_pid(tp.master.path) == pid  # type: ignore[attr-defined]
    assert sorted(p.name for p in sftp_backend.files.iterdir()) == ["a", "b", "c", "d"]


def test_ssh_binary_of_the_master_is_the_sessions(sftp_backend: Backend) -> None:
    """The master's command line is the sessions' own (same options, same key): only -M -N and the socket added."""
    tp = sftp_backend.make()
    tp.connect()
    master = tp.master  # type: ignore[attr-defined]
    pid = _master_pid(master.path)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    session = list(tp.pipe.proc.args)  # type: ignore[attr-defined]
    assert argv[: len(master.options)] == session[: len(master.options)] == master.options
    assert "-M" in argv and "-N" in argv and argv[-2:] == ["--", sftp_backend.spec.split("@")[1].split(":")[0]]
    tp.close()
