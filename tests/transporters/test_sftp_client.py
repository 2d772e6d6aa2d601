"""sftp_client.py, File Conveyor's own SFTP client: its data paths against the real sshd, and what a real server
rarely does (answers out of order, a stream cut half-way) against a scripted one."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fileconveyor.transporters import PermanentError, TransientError
from fileconveyor.transporters import sftp_client as sc
from fileconveyor.transporters.base import CLOSE_WAIT
from fileconveyor.transporters.sftp import _encrypted
from tests.servers.process import children
from tests.servers.sshd import SshServer

from .conftest import Backend


def test_writes_as_large_as_openssh_takes(sftp_backend: Backend, tmp_path: Path) -> None:
    """OpenSSH says (limits@openssh.com) it takes 255 KB writes: a 20 MB file is 80 requests, not 640."""
    tp = sftp_backend.make()
    tp.connect()
    assert b"limits@openssh.com" in tp.sftp.extensions  # type: ignore[attr-defined]
    assert tp.sftp.write_size > 32768  # type: ignore[attr-defined]


def test_paramiko_engine_writes_fit_one_ssh_packet(sftp_backend: Backend) -> None:
    tp = sftp_backend.make(engine="paramiko")
    tp.connect()
    channel = tp.sftp.channel  # type: ignore[attr-defined]
    # The request around the data (29 bytes and a handle) goes in the same packet.
    assert tp.sftp.write_size + 29 + 64 <= channel.out_max_packet_size  # type: ignore[attr-defined]


@pytest.mark.parametrize("splice", [True, False])
def test_both_openssh_data_paths_send_the_same_bytes(sftp_backend: Backend, tmp_path: Path, splice: bool) -> None:
    """splice(2) from the page cache, or pread and write where splice is refused (other systems, some file
    systems): the same bytes arrive, over several write requests, the last one short."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 * 261120 + 12345))
    tp = sftp_backend.make()
    tp.connect()
    tp.pipe._splice = splice  # type: ignore[attr-defined]
    tp.upload(src, b"a.bin")
    assert (sftp_backend.files / "a.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("engine,splice", [("openssh", True), ("openssh", False), ("paramiko", False)])
def test_a_file_that_shrinks_while_sent_fails_and_the_session_goes_on(
    sftp_backend: Backend, tmp_path: Path, engine: str, splice: bool
) -> None:
    """The size was taken at the start; the file then got shorter.  The upload fails (transient: sent again,
    with the new content), no file takes the final name, and the same session carries the next upload."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(600_000))
    tp = sftp_backend.make(engine=engine)
    tp.connect()
    if tp.pipe is not None:  # type: ignore[attr-defined]
        tp.pipe._splice = splice  # type: ignore[attr-defined]
    session = tp.sftp  # type: ignore[attr-defined]
    sftp_backend.files.mkdir(parents=True, exist_ok=True)
    path = str(sftp_backend.files / "tmp.bin").encode()
    handle = session.open_write(path)
    with open(src, "rb") as f, pytest.raises(sc.SourceChanged):
        session.write_file(handle, f.fileno(), 900_000, path)  # 300,000 bytes more than there are
    assert not session.broken
    assert tp.classify(sc.SourceChanged("shrank")).__class__ is TransientError
    tp.upload(src, b"b.bin")  # the same connection
    assert tp.sftp is session  # type: ignore[attr-defined]
    assert not session._replies  # every reply to the failed file's requests was taken
    assert (sftp_backend.files / "b.bin").read_bytes() == src.read_bytes()


def test_encrypted_key_files_are_recognised(tmp_path: Path) -> None:
    """Without paramiko: an encrypted key goes to the paramiko engine, which can ask for its passphrase."""
    cases = {"plain": ("", []), "secret": ("pass phrase", []), "pem": ("", ["-m", "PEM"])}
    cases["pem-secret"] = ("pass phrase", ["-m", "PEM"])
    for name, (phrase, fmt) in cases.items():
        key = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", phrase, *fmt, "-f", str(key)], check=True)
        assert _encrypted(str(key)) == bool(phrase), name
    assert not _encrypted(str(tmp_path / "missing"))  # ssh says what is wrong with it


class Scripted:
    """A channel whose server answers from a script: for each request type, the reply packets to give."""

    def __init__(self, answer: dict[int, object]):
        self.answer, self.inbox, self.sent = answer, bytearray(), []
        self.fail_recv: BaseException | None = None

    def sendall(self, data: bytes) -> None:
        while data:  # one write may hold several requests (create_small)
            n = struct.unpack(">I", data[:4])[0] + 4
            request, data = data[:n], data[n:]
            self.sent.append(request)
            kind = request[4]
            rid = struct.unpack(">I", request[5:9])[0] if kind != sc.INIT else 0
            reply = self.answer[kind]
            packets = reply(rid) if callable(reply) else reply  # type: ignore[operator]
            for packet in packets:
                self.inbox += struct.pack(">I", len(packet)) + packet

    def recv(self, n: int) -> bytes:
        if self.fail_recv:
            raise self.fail_recv
        out = bytes(self.inbox[:n])
        del self.inbox[:n]
        return out


def _status(rid: int, code: int, text: bytes = b"") -> bytes:
    return bytes([sc.STATUS]) + struct.pack(">II", rid, code) + sc._string(text) + sc._string(b"")


VERSION = [bytes([sc.VERSION]) + struct.pack(">I", 3)]


def test_replies_out_of_order_reach_their_requests() -> None:
    """The protocol lets a server answer in any order: each reply goes to its own request."""
    held: list[bytes] = []

    def stat(rid: int) -> list[bytes]:
        # The first request's answer is held back and comes after the second's.
        attrs = bytes([sc.ATTRS]) + struct.pack(">IIQ", rid, sc.A_SIZE, rid * 100)
        if not held:
            held.append(attrs)
            return []
        return [attrs, held.pop()]

    ch = Scripted({sc.INIT: VERSION, sc.STAT: stat})
    s = sc.SFTPSession(ch)
    r1 = s._send(sc.STAT, sc._string(b"/a"))
    r2 = s._send(sc.STAT, sc._string(b"/b"))
    assert s._reply(r2)[1].attrs().size == r2 * 100
    assert s._reply(r1)[1].attrs().size == r1 * 100


def test_status_codes_become_os_errors() -> None:
    codes = {
        sc.NO_SUCH_FILE: FileNotFoundError,
        sc.PERMISSION_DENIED: PermissionError,
        sc.CONNECTION_LOST: ConnectionError,
        sc.FAILURE: OSError,
    }
    for code, exc in codes.items():
        s = sc.SFTPSession(Scripted({sc.INIT: VERSION, sc.REMOVE: lambda rid, code=code: [_status(rid, code)]}))
        with pytest.raises(exc) as info:
            s.remove(b"/x/y")
        assert type(info.value) is exc
    assert "/x/y" in str(info.value)  # the generic failure names the path


def test_a_session_cut_half_way_is_not_used_again() -> None:
    """A read that timed out leaves the stream out of step: later calls fail at once, instead of each waiting
    out the timeout again (the transporter then opens a fresh session)."""
    ch = Scripted({sc.INIT: VERSION, sc.REMOVE: []})  # the server never answers
    s = sc.SFTPSession(ch)
    ch.fail_recv = TimeoutError("no answer")
    with pytest.raises(TimeoutError):
        s.remove(b"/a")
    ch.fail_recv = None
    sent = len(ch.sent)
    with pytest.raises(ConnectionError, match="broke off"):
        s.remove(b"/b")
    assert len(ch.sent) == sent  # nothing more went out


def test_garbage_instead_of_sftp_is_a_clear_error() -> None:
    """A login script that prints on the server corrupts the SFTP stream: say so, don't allocate 1.6 GB."""
    ch = Scripted({sc.INIT: []})
    ch.inbox += b"Welcome to our server!\n"
    with pytest.raises(sc.ProtocolError, match="bad SFTP packet length"):
        sc.SFTPSession(ch)


def test_a_failed_write_never_takes_the_final_name_and_leaves_no_reply_behind(
    sftp_backend: Backend, tmp_path: Path
) -> None:
    """The server's disk is full (the temporary name points at /dev/full): the upload fails, nothing takes the
    final name, and every reply to the failed file's requests was read (none left for later requests)."""
    from fileconveyor.transporters.base import temp_path

    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 << 20))
    sftp_backend.files.mkdir(parents=True, exist_ok=True)
    final = sftp_backend.files / "a.bin"
    Path(os.fsdecode(temp_path(bytes(final)))).symlink_to("/dev/full")
    tp = sftp_backend.make()
    tp.connect()
    # The transporter creates its temporary file exclusively (a link there is removed, never written through):
    # open it the plain way here, so that the write goes to /dev/full.
    plain_open = tp.sftp.open_write  # type: ignore[attr-defined]
    tp.sftp.open_write = lambda path, exclusive=False: plain_open(path)  # type: ignore[attr-defined]
    with pytest.raises(PermanentError):
        tp.upload(src, b"a.bin")
    assert not final.exists()
    assert not tp.sftp._replies  # type: ignore[attr-defined]
    assert not tp.sftp.broken  # type: ignore[attr-defined]
    tp.upload(src, b"b.bin")  # the same session goes on
    assert (sftp_backend.files / "b.bin").read_bytes() == src.read_bytes()


def test_close_from_another_thread_waits_for_the_upload_then_ends_it(
    sftp_backend: Backend, sshd_server: SshServer, tmp_path: Path
) -> None:
    """fc-transport stopping closes connections from its main thread while an upload may be running.  close()
    must not pull the pipes from under the upload (their fd numbers could go to a file opened meanwhile): it
    waits a moment, then ends ssh, and the upload fails as transient before close() returns."""
    src = tmp_path / "big"
    src.write_bytes(os.urandom(16 << 20))
    tp = sftp_backend.make(timeout="30")
    sshd = sshd_server.process.proc.pid  # type: ignore[union-attr]
    before = set(children(sshd))
    tp.connect()
    servers = sorted(set(children(sshd)) - before)  # this connection's sshd processes
    assert servers, "no sshd process for the connection found"
    for pid in servers:  # the server stops answering: the upload hangs in a wait of up to 30 s
        with contextlib.suppress(ProcessLookupError):  # one that ended meanwhile (another test's) is no matter
            os.kill(pid, signal.SIGSTOP)
    # The upload's use of the pipes, seen from inside (under the connection's lock): when it began, how it ended.
    inside = threading.Event()
    failed: list[BaseException] = []
    send = tp._upload  # type: ignore[attr-defined]

    def watched(*args: object) -> object:
        inside.set()
        try:
            return send(*args)
        except BaseException as exc:
            failed.append(exc)
            raise

    tp._upload = watched  # type: ignore[attr-defined]
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: tp.upload(src, b"big")))
    try:
        thread.start()
        # Not a fixed sleep: under load the thread may not have reached the pipes yet, and close() would then
        # end an idle connection instead (the upload opening a fresh one after it).
        assert inside.wait(30), "the upload never started sending"
        time.sleep(0.3)  # into its wait on the stopped server
        started = time.monotonic()
        tp.close()
        took = time.monotonic() - started
        # When close() returns, the upload has failed and let go of the connection, whose pipes are closed and
        # whose ssh is reaped.  (The thread itself may still be unwinding: closing its source file, returning;
        # is_alive() here raced with that under load, and said nothing about the pipes.)
        assert failed, "close() returned while the upload was still in its data path"
        assert tp._busy.acquire(blocking=False), "close() returned while the upload held the connection"  # type: ignore[attr-defined]
        tp._busy.release()  # type: ignore[attr-defined]
        proc = tp.pipe.proc  # type: ignore[attr-defined]
        assert proc.stdin.closed and proc.stdout.closed and proc.returncode is not None
    finally:
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        thread.join(30)
    assert not thread.is_alive()
    assert CLOSE_WAIT - 0.05 < took < 10  # CLOSE_WAIT (1 s) for the upload, then ssh ended: not the 30 s timeout
    assert len(errors) == 1 and isinstance(errors[0], TransientError), errors


def _capture(errors: list[BaseException], fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        errors.append(exc)


def test_a_login_that_prints_is_a_clear_permanent_error_at_once(tmp_path: Path) -> None:
    """A shell start-up file that prints on the server corrupts the SFTP stream: one permanent error that says
    so, without the 5 s wait for ssh to be killed.  `sh` stands for an ssh whose server printed a greeting."""
    from fileconveyor.transporters import parse_destination
    from fileconveyor.transporters.sftp_openssh import PipeChannel, failure

    proc = subprocess.Popen(
        ["sh", "-c", "echo Welcome to our server; cat >/dev/null"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pipe = PipeChannel(proc, 5)
    started = time.monotonic()
    with pytest.raises(sc.ProtocolError) as info:
        sc.SFTPSession(pipe)
    err = failure(pipe, parse_destination("sftp://host/x"), "known_hosts", info.value)
    pipe.close()
    assert isinstance(err, PermanentError) and "printing on the server's login" in str(err), err
    assert time.monotonic() - started < 3


def test_a_broken_session_is_closed_even_after_a_permanent_error(sftp_backend: Backend) -> None:
    """A local read error half-way through a request (EIO) is the file's problem (permanent), but the stream
    is out of step: the connection is closed so that the next file gets a fresh one."""
    tp = sftp_backend.make()
    tp.connect()
    tp.sftp.broken = True  # type: ignore[attr-defined]
    assert isinstance(tp.classify(OSError(errno.EIO, "Input/output error")), PermanentError)
    assert not tp.connected


def test_a_bad_reply_length_stops_the_session_at_once() -> None:
    ch = Scripted({sc.INIT: VERSION, sc.REMOVE: []})
    s = sc.SFTPSession(ch)
    ch.inbox += b"\xff" * 8  # a length of 4 GB: not SFTP
    started = time.monotonic()
    with pytest.raises(sc.ProtocolError):
        s.remove(b"/a")
    assert s.broken
    with pytest.raises(ConnectionError, match="broke off"):
        s.remove(b"/b")
    assert time.monotonic() - started < 1


def test_write_size_leaves_room_in_the_servers_longest_packet() -> None:
    """A server may give the same figure as its longest packet and its longest write: the request's header
    must fit in the packet too."""

    def limits(rid: int) -> list[bytes]:
        return [bytes([sc.EXTENDED_REPLY]) + struct.pack(">IQQQQ", rid, 65536, 65536, 65536, 0)]

    version = [VERSION[0] + sc._string(b"limits@openssh.com") + sc._string(b"1")]
    s = sc.SFTPSession(Scripted({sc.INIT: version, sc.EXTENDED: limits}))
    assert 32768 <= s.write_size <= 65536 - 29 - 256


def test_small_files_go_in_two_round_trips(sftp_backend: Backend, tmp_path: Path) -> None:
    """A file that fits one write: OPEN, WRITE and CLOSE in one write to ssh (to the handle OpenSSH gives
    again), then the rename; each round trip is a wake-up of ssh, sshd and its SFTP server (was three).  The
    first file of a session, whose handle is not known yet, and a file larger than one write go the plain way."""
    tp = sftp_backend.make()
    tp.connect()
    session = tp.sftp  # type: ignore[attr-defined]
    sends: list[int] = []
    send = session._sendall
    session._sendall = lambda data: (sends.append(len(data)), send(data))[1]
    for name, size in [("first", 10), ("a", 4096), ("empty", 0), ("b", 100), ("big", session.write_size + 1)]:
        src = tmp_path / name
        src.write_bytes(os.urandom(size))
        sends.clear()
        tp.upload(src, f"d/{name}")
        assert (sftp_backend.files / "d" / name).read_bytes() == src.read_bytes()
        if name in ("a", "empty", "b"):
            assert len(sends) == 2, (name, sends)  # the burst, the rename
        else:
            assert len(sends) >= 4, (name, sends)  # open; write (data spliced), close; rename
    assert not list((sftp_backend.files / "d").glob(".fc-*"))
    assert not session._replies


class NewHandles(Scripted):
    """A server that gives a new handle at each OPEN, and takes writes and closes on the last one it gave only;
    ``written``: the bytes each handle got."""

    def __init__(self) -> None:
        super().__init__({sc.INIT: VERSION, sc.OPEN: self._open, sc.WRITE: self._write, sc.CLOSE: self._close})
        self.given: list[bytes] = []
        self.written: dict[bytes, bytes] = {}

    def _open(self, rid: int) -> list[bytes]:
        self.given.append(b"h%d" % len(self.given))
        return [bytes([sc.HANDLE]) + struct.pack(">I", rid) + sc._string(self.given[-1])]

    def _on_handle(self, rid: int) -> tuple[sc._Reader, bytes] | None:
        r = sc._Reader(self.sent[-1][9:])
        handle = r.string()
        return (r, handle) if self.given and handle == self.given[-1] else None

    def _write(self, rid: int) -> list[bytes]:
        found = self._on_handle(rid)
        if found is None:
            return [_status(rid, sc.FAILURE, b"bad handle")]
        r, handle = found
        r.u64()
        self.written[handle] = self.written.get(handle, b"") + r.string()
        return [_status(rid, sc.OK)]

    def _close(self, rid: int) -> list[bytes]:
        return [_status(rid, sc.OK if self._on_handle(rid) else sc.FAILURE)]


def test_a_server_that_gives_new_handles_gets_each_file_whole(tmp_path: Path) -> None:
    """The guess misses (this server gives a new handle each time): the writes to the guessed handle fail on the
    server, touching nothing; the file is written again through the handle the OPEN gave, and the session stops
    guessing."""
    src = tmp_path / "a"
    src.write_bytes(b"x" * 1000)
    ch = NewHandles()
    s = sc.SFTPSession(ch)
    with open(src, "rb") as f:
        assert not s.create_small(b"/d/a", f.fileno(), 1000)  # no guess yet: nothing sent
        assert len(ch.sent) == 1  # the hello
        s.write_file(s.open_write(b"/d/a", exclusive=True), f.fileno(), 1000)
        assert s.create_small(b"/d/b", f.fileno(), 1000)  # guessed h0, got h1: written again through h1
        assert ch.written == {b"h0": b"x" * 1000, b"h1": b"x" * 1000}
        assert not s.create_small(b"/d/c", f.fileno(), 1000)  # no more guessing on this session
    assert not s._replies


def test_a_failed_small_write_raises_and_leaves_no_reply_behind(tmp_path: Path) -> None:
    """The guess was right but the write failed (a full disk): create_small raises, so the caller never renames,
    and the next file goes the plain way (the handle's close was not seen to succeed)."""
    src = tmp_path / "a"
    src.write_bytes(b"x" * 10)

    def handle(rid: int) -> list[bytes]:
        return [bytes([sc.HANDLE]) + struct.pack(">I", rid) + sc._string(b"h")]

    ok = lambda rid: [_status(rid, sc.OK)]  # noqa: E731
    answer: dict[int, object] = {sc.INIT: VERSION, sc.OPEN: handle, sc.WRITE: ok, sc.CLOSE: ok}
    s = sc.SFTPSession(Scripted(answer))
    with open(src, "rb") as f:
        s.write_file(s.open_write(b"/a", exclusive=True), f.fileno(), 10)
        answer[sc.WRITE] = lambda rid: [_status(rid, sc.FAILURE, b"No space left on device")]
        with pytest.raises(OSError, match="No space left"):
            s.create_small(b"/b", f.fileno(), 10)
        assert not s._replies and not s.broken
        assert not s.create_small(b"/c", f.fileno(), 10)
        answer[sc.OPEN] = lambda rid: [_status(rid, sc.NO_SUCH_FILE)]  # a failed OPEN: the plain way says why
        s._guess = b"h"
        assert not s.create_small(b"/c", f.fileno(), 10)
        assert not s._replies
