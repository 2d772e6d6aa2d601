"""What only some protocols have: SSH host keys, timeouts against a silent server, symlinks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fileconveyor.errors import ConfigError
from fileconveyor.transporters import AuthError, PermanentError, TransientError, for_destination, parse_destination
from fileconveyor.transporters.sftp_openssh import PipeChannel
from tests.servers.process import ServerProcess, children, free_port
from tests.servers.sshd import PASSPHRASE, SSHD, SshServer

from .conftest import Backend


def test_unknown_host_key_refused(sftp_backend: Backend, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    tp = sftp_backend.make(known_hosts=str(empty))
    with pytest.raises(AuthError, match=r"is not in .*known_hosts.*trust_unknown_host"):
        tp.connect()
    assert not sftp_backend.files.exists()


def test_unknown_host_key_trusted_only_when_asked(sftp_backend: Backend, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    tp = sftp_backend.make(known_hosts=str(empty), trust_unknown_host="yes")
    tp.connect()
    assert empty.read_text() == ""  # trusted for this connection, never written


def test_changed_host_key_refused(sftp_backend: Backend, tmp_path: Path) -> None:
    other_key = Path(sftp_backend.settings["key_file"] + ".pub").read_text().split()[:2]
    port = sftp_backend.spec.split(":")[2].split("/")[0]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{port} {' '.join(other_key)}\n")
    with pytest.raises(AuthError, match="host key mismatch"):
        sftp_backend.make(known_hosts=str(wrong), trust_unknown_host="yes").connect()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["ftp", "sftp"])
def test_silent_server_times_out(scheme: str, silent_port: int) -> None:
    tp = for_destination(parse_destination(f"{scheme}://u@127.0.0.1:{silent_port}/x?timeout=0.5", env={}))
    started = time.monotonic()
    with pytest.raises(TransientError):
        tp.connect()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("scheme", ["ftp", "sftp"])
def test_refused_connection_is_transient(scheme: str) -> None:
    tp = for_destination(parse_destination(f"{scheme}://u@127.0.0.1:{free_port()}/x?timeout=2", env={}))
    with pytest.raises(TransientError, match="refused"):
        tp.connect()


def test_symlink_within_sources(tmp_path: Path) -> None:
    site, work, dest = tmp_path / "site", tmp_path / "work", tmp_path / "dest"
    site.mkdir()
    work.mkdir()
    (site / "raw.css").write_text("raw")
    (work / "min.css").write_text("min")
    tp = for_destination(parse_destination(f"file://{dest}?symlink_within={site}", env={}))
    tp.upload(site / "raw.css", b"raw.css")
    tp.upload(work / "min.css", b"min.css")
    assert os.readlink(dest / "raw.css") == str(site / "raw.css")
    assert not (dest / "min.css").is_symlink() and (dest / "min.css").read_text() == "min"
    tp.upload(work / "min.css", b"raw.css")  # a processed version replaces the link atomically
    assert not (dest / "raw.css").is_symlink() and (dest / "raw.css").read_text() == "min"


def test_key_passphrase_from_environment(sftp_backend: Backend, sshd_server: SshServer, tmp_path: Path) -> None:
    locked = str(sshd_server.locked_key_file)
    # Missing: says where it goes.
    with pytest.raises(AuthError, match="needs a passphrase: put it in FC_127_0_0_1_PASSPHRASE or FC_PASSPHRASE"):
        sftp_backend.make(key_file=locked).connect()
    # Wrong: one permanent refusal that says so (paramiko's "Invalid key" read as a passing failure, retried).
    with pytest.raises(AuthError, match="wrong passphrase"):
        sftp_backend.make(key_file=locked, FC_PASSPHRASE="not it").connect()
    # Forced through ssh, which cannot ask for it: the refusal says why.
    with pytest.raises(AuthError, match="key file is encrypted and ssh cannot ask for its passphrase"):
        sftp_backend.make(key_file=locked, engine="openssh").connect()
    tp = sftp_backend.make(key_file=locked, FC_PASSPHRASE=PASSPHRASE)
    src = tmp_path / "a"
    src.write_bytes(b"locked")
    tp.upload(src, b"a")
    assert (sftp_backend.files / "a").read_bytes() == b"locked"


def test_local_look_first_leaves_the_same_bytes_alone_once(tmp_path: Path) -> None:
    """upload(look_first=True): as skip_unchanged, for that call only (sftp and ftp cannot tell: they send)."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.css").write_bytes(b"aaaa")
    with for_destination(parse_destination(f"file://{dest}")) as tp:
        assert tp.upload(src / "a.css", b"a.css", look_first=True) == "uploaded"
        ino = (dest / "a.css").stat().st_ino
        assert tp.upload(src / "a.css", b"a.css", look_first=True) == "unchanged"
        assert (dest / "a.css").stat().st_ino == ino
        assert tp.upload(src / "a.css", b"a.css") == "uploaded"
        assert (dest / "a.css").stat().st_ino != ino


def test_local_skip_unchanged_compares_bytes_and_links(tmp_path: Path) -> None:
    from fileconveyor.transporters import for_destination, parse_destination

    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.css").write_bytes(b"aaaa")
    spec = f"file://{dest}?skip_unchanged=yes"
    with for_destination(parse_destination(spec)) as tp:
        assert tp.upload(src / "a.css", b"a.css") == "uploaded"
        ino = (dest / "a.css").stat().st_ino
        assert tp.upload(src / "a.css", b"a.css") == "unchanged"
        assert (dest / "a.css").stat().st_ino == ino  # the file was left alone, not replaced
        (src / "a.css").write_bytes(b"aaab")  # same size, other bytes
        assert tp.upload(src / "a.css", b"a.css") == "uploaded"
        assert (dest / "a.css").read_bytes() == b"aaab"
        os.mkfifo(dest / "fifo.css")  # a FIFO at the name is looked at, never opened (that would block)
        assert tp.upload(src / "a.css", b"fifo.css") == "uploaded"
        (dest / "link.css").symlink_to(src / "a.css")  # the same bytes, but through a link: not what was asked
        assert tp.upload(src / "a.css", b"link.css") == "uploaded"
        assert not (dest / "link.css").is_symlink()
    with for_destination(parse_destination(f"{spec}&symlink_within={src}")) as tp:
        assert tp.upload(src / "a.css", b"a.css") == "uploaded"  # a copy is not the link asked for
        assert (dest / "a.css").is_symlink()
        assert tp.upload(src / "a.css", b"a.css") == "unchanged"


def test_engine_auto_logs_in_with_a_key_through_openssh(sftp_backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"over ssh")
    tp = sftp_backend.make()
    tp.upload(src, b"a")
    assert tp.pipe is not None and os.path.basename(tp.pipe.proc.args[0]) == "ssh"  # type: ignore[attr-defined]
    assert tp.client is None  # type: ignore[attr-defined]
    forced = sftp_backend.make(engine="paramiko")
    forced.upload(src, b"b")
    assert forced.pipe is None and forced.client is not None  # type: ignore[attr-defined]
    assert (sftp_backend.files / "a").read_bytes() == (sftp_backend.files / "b").read_bytes() == b"over ssh"
    tp.close()
    assert tp.pipe is None or tp.pipe.proc.returncode is not None  # type: ignore[attr-defined]  # ssh has ended


def test_engine_setting_is_checked(sftp_backend: Backend) -> None:
    with pytest.raises(ConfigError, match="engine must be auto, openssh or paramiko"):
        sftp_backend.make(engine="putty")


@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_sftp_server_that_stops_answering_times_out(
    sftp_backend: Backend, sshd_server: SshServer, tmp_path: Path, engine: str
) -> None:
    """A server that stops answering (its processes stopped, the TCP connection still up) fails the upload as
    transient within about the timeout, instead of hanging the connection for ever."""
    src = tmp_path / "big"
    src.write_bytes(os.urandom(8 << 20))
    tp = sftp_backend.make(engine=engine, timeout="2")
    sshd = sshd_server.process.proc.pid  # type: ignore[union-attr]
    before = set(children(sshd))
    tp.upload(src, b"first")  # connected, the SFTP session is up
    servers = sorted(set(children(sshd)) - before)  # this connection's sshd processes (internal-sftp in them)
    assert servers, "no sshd process for the connection found"
    for pid in servers:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"timed out|no answer|connection lost"):
            tp.upload(src, b"second")
        assert time.monotonic() - started < 25
    finally:
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):  # gone already: reaped by sshd
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
        tp.close()
    tp.upload(src, b"third")  # a fresh session works again
    assert (sftp_backend.files / "third").read_bytes() == src.read_bytes()


def test_openssh_engine_takes_paths_with_spaces_and_percent(
    sftp_backend: Backend, sshd_server: SshServer, tmp_path: Path
) -> None:
    odd = tmp_path / "dir with space %d"
    odd.mkdir()
    key, known = odd / "key 1", odd / "known hosts"
    key.write_bytes(sshd_server.key_file.read_bytes())
    key.chmod(0o600)
    known.write_bytes(sshd_server.known_hosts.read_bytes())
    src = tmp_path / "a"
    src.write_bytes(b"odd paths")
    tp = sftp_backend.make(key_file=str(key), known_hosts=str(known))
    tp.upload(src, b"a")
    assert tp.pipe is not None  # type: ignore[attr-defined]
    assert (sftp_backend.files / "a").read_bytes() == b"odd paths"


def test_openssh_pipe_waits_at_most_the_timeout() -> None:
    """The ssh process alive but nothing coming (an SFTP server that stopped answering while SSH keepalives
    still pass): reads and writes on its pipes give up after the timeout.  `sleep` stands for that ssh."""
    proc = subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pipe = PipeChannel(proc, 0.5)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            pipe.recv(4)
        with pytest.raises(TimeoutError):
            for _ in range(10_000):  # fills the pipe that nobody reads, then waits
                pipe.sendall(b"x" * 65536)
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        pipe.close()


@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_server_without_sftp_is_one_permanent_error(sshd_server: SshServer, tmp_path: Path, engine: str) -> None:
    """An SSH server that offers no SFTP subsystem (logins work, SFTP does not): one permanent error that says
    so, not a connection retried for ever."""
    config = (sshd_server.known_hosts.parent / "sshd_config").read_text()
    port = free_port()
    lines = [line for line in config.splitlines() if not line.startswith(("Subsystem", "Port", "PidFile"))]
    (tmp_path / "sshd_config").write_text("\n".join([*lines, f"Port {port}", f"PidFile {tmp_path / 'pid'}"]) + "\n")
    known = tmp_path / "known_hosts"
    known.write_text(sshd_server.known_hosts.read_text().replace(f"]:{sshd_server.port} ", f"]:{port} "))
    server = ServerProcess("sshd", [SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")], port, tmp_path / "log")
    server.start()
    try:
        spec = f"sftp://{sshd_server.user}@127.0.0.1:{port}{tmp_path}?" + urlencode(
            {"key_file": str(sshd_server.key_file), "known_hosts": str(known), "agent": "no", "engine": engine}
        )
        with for_destination(parse_destination(spec)) as tp, pytest.raises(PermanentError, match="no SFTP subsystem"):
            tp.connect()
    finally:
        server.stop()


def test_missing_key_file_is_a_configuration_error(sftp_backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key_file .*nokey does not exist"):
        sftp_backend.make(key_file=str(tmp_path / "nokey"))


def test_openssh_engine_finds_default_keys_in_home(
    sftp_backend: Backend, sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key_file: the usual keys in $HOME/.ssh, as paramiko and the rest of File Conveyor read $HOME (ssh alone
    would look in the password database's home directory, which a service or container may not use)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(sshd_server.key_file.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    settings = {k: v for k, v in sftp_backend.settings.items() if k != "key_file"}
    sftp_backend.settings = settings
    src = tmp_path / "a"
    src.write_bytes(b"from home")
    tp = sftp_backend.make()
    tp.upload(src, b"a")
    assert tp.pipe is not None  # type: ignore[attr-defined]
    assert (sftp_backend.files / "a").read_bytes() == b"from home"


@pytest.mark.parametrize("scheme", ["ftp", "ftps"])
def test_ftp_sends_files_and_pipes_whole_without_a_type_per_file(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session is binary from the login on: no TYPE I (a round trip) before each file, as ftplib's
    storbinary sent.  To a server on this host (the fixtures'), regular files, pipes and FTPS alike go in writes
    of SEND_BLOCK bytes, never by sendfile(2): that left a one-thread server such as pyftpdlib a third more work
    per file, and it sets the pace (ftp.py, _store).  Every one arrives whole."""

    def no_sendfile(*args: object, **kwargs: object) -> int:
        raise AssertionError("sendfile(2) on an FTP data connection")

    monkeypatch.setattr(socket.socket, "sendfile", no_sendfile)
    backend: Backend = request.getfixturevalue(f"{scheme}_backend")
    backend.files.mkdir(parents=True, exist_ok=True)
    tp = backend.make()
    tp.connect()
    sent: list[str] = []
    putcmd = tp.ftp.putcmd  # type: ignore[attr-defined]
    tp.ftp.putcmd = lambda line: (sent.append(line.split()[0]), putcmd(line))[1]  # type: ignore[attr-defined]
    files = {name: os.urandom(size) for name, size in [("empty", 0), ("small", 5), ("big", 3 << 20)]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        tp.upload(tmp_path / name, name.encode())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    piped = os.urandom(2 << 20)
    writer = threading.Thread(target=fifo.write_bytes, args=(piped,))  # opens when the upload does
    writer.start()
    tp.upload(fifo, b"piped")
    writer.join(10)
    for name, data in [*files.items(), ("piped", piped)]:
        assert (backend.files / name).read_bytes() == data, name
    assert sent.count("STOR") == 4 and "TYPE" not in sent, sent


@pytest.mark.parametrize("scheme", ["ftp", "ftps"])
def test_ftp_sends_regular_files_by_sendfile_to_a_server_on_another_host(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """To a server on another host the receiving side is not ours to spare: a regular file goes by sendfile(2)
    (no copy through Python), a pipe and anything over TLS in writes, each whole.  The fixture's server is on
    loopback, so "another host" is what ftp._same_host is made to answer; the transfers are real."""
    from fileconveyor.transporters import ftp as ftp_module

    monkeypatch.setattr(ftp_module, "_same_host", lambda conn: False)
    by_sendfile: list[int] = []
    real = socket.socket.sendfile

    def sendfile(sock: socket.socket, file: object, offset: int = 0, count: int | None = None) -> int:
        n = real(sock, file, offset, count)  # type: ignore[arg-type]
        by_sendfile.append(n)
        return n

    monkeypatch.setattr(socket.socket, "sendfile", sendfile)
    backend: Backend = request.getfixturevalue(f"{scheme}_backend")
    backend.files.mkdir(parents=True, exist_ok=True)
    tp = backend.make()
    files = {name: os.urandom(size) for name, size in [("small", 5), ("big", 3 << 20)]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        tp.upload(tmp_path / name, name.encode())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    piped = os.urandom(1 << 20)
    writer = threading.Thread(target=fifo.write_bytes, args=(piped,))
    writer.start()
    tp.upload(fifo, b"piped")
    writer.join(10)
    for name, data in [*files.items(), ("piped", piped)]:
        assert (backend.files / name).read_bytes() == data, name
    assert by_sendfile == ([] if scheme == "ftps" else [5, 3 << 20])


def test_ftp_same_host_is_told_by_the_connections_two_addresses() -> None:
    from fileconveyor.transporters.ftp import _same_host

    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as conn:
        assert _same_host(conn)

    class Remote:  # a connected socket's two addresses, as seen to a server on another host
        def getsockname(self) -> tuple[str, int]:
            return ("192.0.2.2", 40000)

        def getpeername(self) -> tuple[str, int]:
            return ("198.51.100.7", 20)

    class Gone:
        def getsockname(self) -> tuple[str, int]:
            raise OSError("not connected")

    assert not _same_host(Remote()) and not _same_host(Gone())


def _ftp_commands(tp: object) -> list[str]:
    """The commands ``tp`` (an FTP transporter, connected) sends from now on, by name."""
    sent: list[str] = []
    ftp = tp.ftp  # type: ignore[attr-defined]
    putcmd = ftp.putcmd
    ftp.putcmd = lambda line: (sent.append(line.split()[0]), putcmd(line))[1]
    return sent


def test_ftp_a_directory_it_just_made_is_not_listed_again(ftp_backend: Backend, tmp_path: Path) -> None:
    """A directory that MKD made (257) is a real directory of ours: one LIST of its parent (to find it missing)
    and no second one to see what was made (four commands and a data connection a new directory).  A directory
    another connection made (550 to our MKD) is still looked at in the listing, and links are still refused."""
    ftp_backend.files.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "a"
    src.write_bytes(b"deep")
    tp = ftp_backend.make()
    tp.connect()
    sent = _ftp_commands(tp)
    tp.upload(src, b"n1/n2/a")
    assert (ftp_backend.files / "n1" / "n2" / "a").read_bytes() == b"deep"
    assert sent.count("MKD") == 2 and sent.count("LIST") == 2, sent  # one LIST per level
    assert tp.take_made_dirs() == [b"n1", b"n1/n2"]
    other = ftp_backend.make()  # another connection: finds them made, by the listing
    other.connect()
    sent = _ftp_commands(other)
    other.upload(src, b"n1/n2/b")
    assert "MKD" not in sent and sent.count("LIST") == 2, sent
    (ftp_backend.files / "elsewhere").mkdir()
    (ftp_backend.files / "n3").symlink_to(ftp_backend.files / "elsewhere")
    with pytest.raises(PermanentError, match="symbolic link"):
        other.upload(src, b"n3/c")
    assert list((ftp_backend.files / "elsewhere").iterdir()) == []
