"""sftp_client.py, File Conveyor's own SFTP client: its data paths against the real sshd, and what a real server
rarely does (answers out of order, a stream cut half-way) against a scripted one."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from fileconveyor.transporters import TransientError
from fileconveyor.transporters import sftp_client as sc
from fileconveyor.transporters.sftp import _encrypted

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
        self.sent.append(data)
        kind = data[4]
        rid = struct.unpack(">I", data[5:9])[0] if kind != sc.INIT else 0
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
