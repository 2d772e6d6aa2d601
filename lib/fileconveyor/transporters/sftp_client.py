"""A small SFTP (version 3) client: just what the sftp transporter does, over any byte channel.

Why our own and not paramiko's SFTPClient: the upload is the whole job here, and it is one tight loop of
write requests sent ahead of their replies.  Doing it ourselves means
- no paramiko import when OpenSSH's ssh carries the session (a quarter of a second of every start, paid again
  per connection in worker processes, was most of fc-transport's gap to rclone on 20 files of 20 MB);
- the file's bytes go from the page cache to ssh's pipe with splice(2), never through Python (``send_file``);
- writes as large as the server takes (``limits@openssh.com``: 255 KB for OpenSSH), so a 20 MB file is 80
  requests, not 640;
- a small file (one write) in two round trips, not three: its OPEN, WRITE and CLOSE go together, to the handle
  OpenSSH will give (``create_small``), then the rename; on a 2-core machine each round trip is a wake-up of ssh,
  sshd and the SFTP server, most of the time a small file takes;
- every reply checked: paramiko's close() skipped the replies to the last pipelined writes, so a failed write
  (a full disk) could go unnoticed, and waited for all writes before sending the close.

The channel is anything with ``sendall(bytes)`` and ``recv(n) -> bytes`` (b"" at the end), optionally
``send_file(fd, offset, count)`` and ``wait_readable()``: sftp_openssh.PipeChannel (ssh's pipes) or a paramiko
Channel.  Errors are OSError like the os module's: FileNotFoundError, PermissionError, an OSError with no errno
for the server's generic "Failure"; EOFError when the channel ends.  Protocol: draft-ietf-secsh-filexfer-02, and
OpenSSH's PROTOCOL.sftp for the extensions.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Packet types
INIT, VERSION = 1, 2
OPEN, CLOSE, WRITE, LSTAT, REMOVE, MKDIR, RMDIR, STAT = 3, 4, 6, 7, 13, 14, 15, 17
EXTENDED, EXTENDED_REPLY = 200, 201
STATUS, HANDLE, ATTRS = 101, 102, 105
# Open flags
WRITE_FLAG, CREATE, TRUNCATE, EXCL = 0x02, 0x08, 0x10, 0x20
# Status codes
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE, NO_CONNECTION, CONNECTION_LOST = range(8)
# Attribute flags
A_SIZE, A_UIDGID, A_PERMISSIONS, A_ACMODTIME, A_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000

# Every server takes writes of 32 KB (the draft's minimum packet is 34,000 bytes); OpenSSH says it takes more.
DEFAULT_WRITE = 32768
MAX_WRITE = 1 << 20  # whatever a server claims, no single request above this
IN_FLIGHT = 8 << 20  # bytes of writes sent ahead of their replies: 4 ssh windows of 2 MB, enough for a WAN
MAX_PACKET = 1 << 20  # a reply larger than this is garbage (replies here are statuses, handles and attributes)

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
HEAD = struct.Struct(">IBI")  # length, type, request id


class Channel(Protocol):
    def sendall(self, data: bytes) -> None: ...
    def recv(self, n: int) -> bytes: ...


@dataclass
class Attrs:
    size: int | None = None
    mode: int | None = None
    mtime: int | None = None


def _string(data: bytes) -> bytes:
    return U32.pack(len(data)) + data


class _Reader:
    """Fields of one packet's payload, in order."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u32(self) -> int:
        (value,) = U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        (value,) = U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        n = self.u32()
        if self.pos + n > len(self.data):
            raise struct.error("string runs past the end of the packet")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def attrs(self) -> Attrs:
        flags = self.u32()
        out = Attrs()
        if flags & A_SIZE:
            out.size = self.u64()
        if flags & A_UIDGID:
            self.pos += 8
        if flags & A_PERMISSIONS:
            out.mode = self.u32()
        if flags & A_ACMODTIME:
            self.pos += 4
            out.mtime = self.u32()
        return out


def status_error(code: int, message: str, path: bytes | None) -> OSError | EOFError:
    """What an error status means, as the exception the os module would raise for it."""
    name = os.fsdecode(path) if path is not None else None
    if code == NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, message or "No such file", name)
    if code == PERMISSION_DENIED:
        return PermissionError(errno.EACCES, message or "Permission denied", name)
    if code in (NO_CONNECTION, CONNECTION_LOST):
        return ConnectionError(message or "connection lost")
    if code == EOF:
        return EOFError(message or "end of file")
    text = message or {FAILURE: "Failure", BAD_MESSAGE: "Bad message"}.get(code, f"status {code}")
    return OSError(f"{text}: {name}" if name else text)  # no errno: the server did not say which


class SourceChanged(OSError):
    """The local file got shorter while it was being sent."""


class ProtocolError(ConnectionError):
    """The server sent something that is not SFTP: the session cannot go on."""


class SFTPSession:
    """One SFTP session over ``channel``; not thread-safe (one per connection)."""

    def __init__(self, channel: Channel, max_write: int | None = None):
        self.channel = channel
        # True once a send or a read stopped half-way (a timeout, a dead ssh): the stream is out of step, so
        # nothing more is sent or awaited on it (a request now would wait the whole timeout again for nothing).
        self.broken = False
        self._buf = bytearray()
        self._next_id = 0
        self._replies: dict[int, tuple[int, _Reader]] = {}  # answered out of order, kept until asked for
        # The handle the next OPEN will most likely get: the last one closed without error (OpenSSH reuses
        # it), or None while that is unknown, or after a guess missed once (a server that makes new ones).
        self._guess: bytes | None = None
        self._guessing = True
        self._wait_readable: Callable[[], None] | None = getattr(channel, "wait_readable", None)
        self.extensions = self._init()
        # ``max_write``: what the channel carries in one piece (paramiko: one SSH packet); the server may allow less.
        self.write_size = min(self._server_write_size(), max_write or MAX_WRITE)

    # -- framing ------------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._usable()
            self.broken = True
            data = self.channel.recv(max(n - len(self._buf), 65536))
            if not data:
                raise EOFError("the SFTP session ended (the server or ssh closed it)")
            self.broken = False
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_packet(self) -> tuple[int, _Reader]:
        (length,) = U32.unpack(self._recv_exact(4))
        if not 1 <= length <= MAX_PACKET:
            self.broken = True  # where the next packet starts is unknown
            raise ProtocolError(f"bad SFTP packet length {length}: is something printing on the server's login?")
        body = self._recv_exact(length)
        return body[0], _Reader(body[1:])

    def _usable(self) -> None:
        if self.broken:
            raise ConnectionError("the SFTP session broke off earlier")

    def _sendall(self, data: bytes) -> None:
        self._usable()
        self.broken = True
        self.channel.sendall(data)
        self.broken = False

    def _send_file(self, send_file: Callable[[int, int, int], None], fd: int, offset: int, n: int) -> None:
        self._usable()
        self.broken = True
        try:
            send_file(fd, offset, n)
        except SourceChanged:  # the request was completed (padded) before this was raised
            self.broken = False
            raise
        self.broken = False

    def _packet(self, kind: int, *fields: bytes) -> tuple[int, bytes]:
        """A request's id, and the request framed (to send now, or with others in one write)."""
        rid = self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        payload = b"".join(fields)
        return rid, HEAD.pack(len(payload) + 5, kind, rid) + payload

    def _send(self, kind: int, payload: bytes) -> int:
        rid, packet = self._packet(kind, payload)
        self._sendall(packet)
        return rid

    def _reply(self, rid: int, fresh: bool = False) -> tuple[int, _Reader]:
        """The reply to request ``rid`` (OpenSSH answers in order; the protocol does not promise it).
        ``fresh``: sent just now, with no earlier reply due, so nothing can have come yet: wait for the channel
        before reading (a read that finds nothing is one more system call, and in a thread one more hand-over
        of the GIL: a small file waits three times)."""
        if fresh and not self._buf and rid not in self._replies and self._wait_readable is not None:
            self._usable()
            self.broken = True  # as in _recv_exact: a timeout leaves a reply to come, out of step
            self._wait_readable()
            self.broken = False
        while rid not in self._replies:
            kind, r = self._read_packet()
            try:
                self._replies[r.u32()] = (kind, r)
            except struct.error:
                raise ProtocolError("truncated SFTP reply") from None
        return self._replies.pop(rid)

    def _status(self, rid: int, path: bytes | None = None, fresh: bool = False) -> None:
        """Wait for request ``rid``'s status; raise unless it is OK."""
        kind, r = self._reply(rid, fresh)
        self._check(kind, r, path, STATUS)

    def _check(self, kind: int, r: _Reader, path: bytes | None, expected: int) -> None:
        if kind == STATUS:
            try:
                code, message = r.u32(), r.string().decode("utf-8", "replace")
            except struct.error:
                code, message = FAILURE, ""
            if code != OK or expected != STATUS:
                raise status_error(code, message, path)
        elif kind != expected:
            raise ProtocolError(f"unexpected SFTP reply type {kind} (wanted {expected})")

    def _init(self) -> dict[bytes, bytes]:
        self._sendall(U32.pack(5) + bytes([INIT]) + U32.pack(3))
        kind, r = self._read_packet()
        if kind != VERSION:
            raise ProtocolError(f"the server answered SFTP's hello with packet type {kind}")
        r.u32()  # the version: servers speaking a later one still speak 3 to a client that asks for 3
        extensions = {}
        try:
            while r.pos < len(r.data):
                name = r.string()
                extensions[name] = r.string()
        except struct.error:
            pass  # a malformed extension list: use none of them
        return extensions

    def _server_write_size(self) -> int:
        if b"limits@openssh.com" not in self.extensions:
            return DEFAULT_WRITE
        kind, r = self._reply(self._send(EXTENDED, _string(b"limits@openssh.com")))
        try:
            self._check(kind, r, None, EXTENDED_REPLY)
            packet = r.u64()  # the longest packet the server takes
            r.u64()  # the longest read
            longest = r.u64()
        except (OSError, EOFError, struct.error):
            return DEFAULT_WRITE
        if packet:  # a server may give the same figure for both: the request's header must fit too
            longest = min(longest, packet - 1024)
        return min(MAX_WRITE, longest) if longest >= 1024 else DEFAULT_WRITE

    # -- operations ---------------------------------------------------------------------------

    def open_write(self, path: bytes, exclusive: bool = False) -> bytes:
        """A handle on ``path``, created or truncated, for writing; ``exclusive``: created, or an error when
        something is there already (a link included, which is then never written through)."""
        flags = WRITE_FLAG | CREATE | (EXCL if exclusive else TRUNCATE)
        rid = self._send(OPEN, _string(path) + U32.pack(flags) + U32.pack(0))
        self._guess = None  # a handle is open from here until write_file closes it
        kind, r = self._reply(rid, fresh=True)
        self._check(kind, r, path, HANDLE)
        return r.string()

    def create_small(self, path: bytes, fd: int, size: int) -> bool:
        """Create ``path`` (exclusive, as open_write), write the ``size`` bytes of ``fd`` and close it, in one
        round trip: the OPEN, the WRITE and the CLOSE go together, the two last to the handle this OPEN will
        most likely get (``_guess``).  False, with nothing created, when it cannot be done that way (no guess,
        a file larger than one write, or the OPEN failed: the caller then opens the plain way, which says
        why); raises, like write_file, when the write or the close failed.

        Safe when the guess misses: no other handle of this session is open (a guess is only kept while every
        handle was closed without error), so writes and the close to the guessed handle fail on the server,
        touching nothing; the file is then written through the handle the OPEN gave, and guessing stops."""
        guess = self._guess
        if guess is None or size > self.write_size:
            return False
        data = _pread_exact(fd, size, 0)  # before anything is sent: a file that shrank sends nothing
        rid, opening = self._packet(OPEN, _string(path), U32.pack(WRITE_FLAG | CREATE | EXCL), U32.pack(0))
        pending: deque[int] = deque()
        packets = [opening]
        if size:
            wid, write = self._packet(WRITE, _string(guess), U64.pack(0), U32.pack(size), data)
            pending.append(wid)
            packets.append(write)
        cid, close = self._packet(CLOSE, _string(guess))
        pending.append(cid)
        packets.append(close)
        self._guess = None  # until this file's handle is closed without error
        self._sendall(b"".join(packets))
        kind, r = self._reply(rid, fresh=True)
        try:
            self._check(kind, r, path, HANDLE)
            handle = r.string()
        except (OSError, EOFError, struct.error):
            handle = None
        if handle != guess:  # the OPEN failed (writes and close failed with it), or gave another handle
            for wid in pending:
                with contextlib.suppress(OSError, EOFError):
                    self._status(wid)
            if handle is None:
                return False
            self._guessing = False
            self.write_file(handle, fd, size, path)
            return True
        self._statuses(pending, path)
        self._guess = handle
        return True

    def write_file(self, handle: bytes, fd: int, size: int | None, path: bytes | None = None) -> None:
        """Write the first ``size`` bytes of ``fd`` (None: up to its end, for a pipe) through ``handle`` as
        pipelined requests, then close the handle; raise if any write or the close failed, so a partial file
        never takes its final name.

        Writes are sent ahead of their replies, up to IN_FLIGHT bytes (the difference is 10x on a WAN); the
        close goes right after the last write, and all their replies are read in one wait."""
        send_file = getattr(self.channel, "send_file", None) if size is not None else None
        window = max(4, IN_FLIGHT // self.write_size)
        pending: deque[int] = deque()
        offset = 0
        try:
            while size is None or offset < size:
                if size is None:
                    data = os.read(fd, self.write_size)
                    if not data:
                        break
                    n = len(data)
                else:
                    n = min(self.write_size, size - offset)
                    data = b"" if send_file is not None else _pread_exact(fd, n, offset)
                rid = self._next_id = (self._next_id + 1) & 0xFFFFFFFF
                head = HEAD.pack(n + 21 + len(handle), WRITE, rid) + _string(handle) + U64.pack(offset) + U32.pack(n)
                pending.append(rid)  # before the send: a file that shrinks still gets its (padded) request answered
                if send_file is not None:
                    self._sendall(head)
                    self._send_file(send_file, fd, offset, n)
                else:
                    self._sendall(head + data)
                offset += n
                while len(pending) > window:
                    self._status(pending.popleft(), path)
        except BaseException:
            if not self.broken:  # a failed write or a local error: close the handle, it holds the server's memory,
                pending.append(self._send(CLOSE, _string(handle)))
                for rid in pending:  # and take the replies still to come, so that none is left in the stream
                    with contextlib.suppress(OSError, EOFError):
                        self._status(rid)
            raise
        pending.append(self._send(CLOSE, _string(handle)))  # with the writes' replies still to come: one wait
        self._statuses(pending, path)
        if self._guessing:
            self._guess = handle

    def _statuses(self, pending: deque[int], path: bytes | None) -> None:
        """Wait for every request in ``pending``; raise the first failure once all are answered, so that no
        reply is left in the stream for a later request to trip over."""
        error: BaseException | None = None
        while pending:
            try:
                self._status(pending.popleft(), path)
            except (OSError, EOFError) as exc:
                if self.broken:
                    raise
                error = error or exc
        if error is not None:
            raise error

    def posix_rename(self, old: bytes, new: bytes) -> None:
        """Rename ``old`` over ``new`` atomically (OpenSSH's posix-rename: plain SFTP rename refuses to replace)."""
        self._status(
            self._send(EXTENDED, _string(b"posix-rename@openssh.com") + _string(old) + _string(new)), new, True
        )

    def remove(self, path: bytes) -> None:
        self._status(self._send(REMOVE, _string(path)), path, True)

    def mkdir(self, path: bytes) -> None:
        self._status(self._send(MKDIR, _string(path) + U32.pack(0)), path, True)

    def rmdir(self, path: bytes) -> None:
        self._status(self._send(RMDIR, _string(path)), path, True)

    def stat(self, path: bytes) -> Attrs:
        return self._attrs(STAT, path)

    def lstat(self, path: bytes) -> Attrs:
        """The attributes of ``path`` itself, a link included (``mode`` says which)."""
        return self._attrs(LSTAT, path)

    def _attrs(self, request: int, path: bytes) -> Attrs:
        kind, r = self._reply(self._send(request, _string(path)), fresh=True)
        self._check(kind, r, path, ATTRS)
        try:
            return r.attrs()
        except struct.error:
            raise ProtocolError("truncated SFTP attributes") from None


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            raise SourceChanged(f"the file shrank while it was being sent (at byte {offset + len(data)})")
        data += more
    return data
