"""sftp (sftp://): deliver over SSH: OpenSSH's ssh client or paramiko (sftp_openssh.py says which, and why).

Settings:
    key_file            private key to log in with (its passphrase: FC_<NAME>_PASSPHRASE or FC_PASSPHRASE)
    agent               no: don't ask the SSH agent for keys (default yes)
    known_hosts         known_hosts file the server's host key must be in (default ~/.ssh/known_hosts)
    trust_unknown_host  yes: accept a host key found in no known_hosts file (first contact only; never the default)
    engine              auto (default): ssh for key and agent logins, paramiko for the rest; openssh or paramiko
A password, if any, comes from FC_<NAME>_PASSWORD, FC_PASSWORD or a private config file.
Without key_file, the usual ~/.ssh/id_* keys are tried, as ssh does.

    sftp://deploy@host:2222/var/www/static  +  upload(b"/tmp/work/a.css", b"css/a.css")  ->  /var/www/static/css/a.css
"""

from __future__ import annotations

import getpass
import logging
import os
import stat
from collections import deque
from typing import BinaryIO, ClassVar

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_WRITE, int64
from paramiko.ssh_exception import NoValidConnectionsError

from ..errors import ConfigError, FCError
from . import sftp_openssh as openssh
from .base import AuthError, PermanentError, RemoteStat, TransientError, Transporter, join, temp_path
from .destination import Destination

log = logging.getLogger(__name__)
CHUNK = 32768  # the largest SFTP write paramiko sends in one request
# An SSH_FXP_WRITE request around the data: length (4), type (1), request id (4), handle (4 + its length),
# offset (8), data length (4).
WRITE_HEADER = 25
# Write requests sent ahead of their replies: more than the 2 MB SSH window holds (64 writes), so the window,
# not this, is what limits a fast link.
WINDOW = 64


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise AuthError(
            f"host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in {self.known_hosts}: "
            f"add it (ssh-keyscan) after checking it, or set trust_unknown_host=yes"
        )


class _Trust(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("trusting unknown host key of %s: %s %s", hostname, key.get_name(), key.fingerprint)


_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class _Transport(paramiko.Transport):
    # AES-GCM first: it needs no separate HMAC pass, which in paramiko costs Python time per packet (7% more
    # throughput on bulk uploads here).  Servers without it negotiate the next cipher in paramiko's usual order.
    _preferred_ciphers = (*_GCM, *(c for c in paramiko.Transport._preferred_ciphers if c not in _GCM))


class SFTP(Transporter):
    """Uploads over SFTP, host key checked, to a temporary name then posix-rename."""

    name = "sftp"
    schemes = ("sftp",)
    settings: ClassVar[dict[str, str]] = {
        "key_file": "private key file to log in with (passphrase from FC_<NAME>_PASSPHRASE or FC_PASSPHRASE)",
        "agent": "no: don't use the SSH agent (default yes)",
        "known_hosts": "known_hosts file holding the server's host key (default ~/.ssh/known_hosts)",
        "trust_unknown_host": "yes: accept a host key that is in no known_hosts file (never the default)",
        "engine": "auto (default): OpenSSH's ssh client when the login needs no password or passphrase, "
        "else paramiko; openssh or paramiko to choose",
    }
    default_connections = 4  # OpenSSH's MaxStartups/MaxSessions tolerate this; more rarely helps
    isolate = True  # paramiko encrypts and frames each packet in Python: one process per connection

    def __init__(self, dest: Destination):
        super().__init__(dest)
        engine = dest.settings.get("engine", "auto")
        if engine not in ("auto", "openssh", "paramiko"):
            raise ConfigError(f"{dest}: engine must be auto, openssh or paramiko, not {engine!r}")
        self.pipe: openssh.PipeChannel | None = None

    def _engine(self, key_file: str | None) -> str:
        """openssh or paramiko: see sftp_openssh.py for why and when."""
        engine = self.dest.settings.get("engine", "auto")
        if engine == "openssh" and openssh.ssh_binary() is None:
            raise ConfigError(f"{self.dest}: engine=openssh needs OpenSSH's ssh client (Debian: openssh-client)")
        if engine != "auto":
            return engine
        if openssh.ssh_binary() is None or self.dest.flag("trust_unknown_host"):
            return "paramiko"
        if self.dest.secret("password") or self.dest.secret("passphrase"):
            return "paramiko"
        if key_file and _encrypted(key_file):
            return "paramiko"  # says "needs a passphrase", where ssh in batch mode only says "denied"
        return "openssh"

    def _connect(self) -> None:
        known_hosts = os.path.expanduser(self.dest.settings.get("known_hosts", "~/.ssh/known_hosts"))
        key_file = self.dest.settings.get("key_file")
        key_file = os.path.expanduser(key_file) if key_file else None
        if self._engine(key_file) == "openssh":
            self._connect_openssh(known_hosts, key_file)
        else:
            self._connect_paramiko(known_hosts, key_file)

    def _connect_openssh(self, known_hosts: str, key_file: str | None) -> None:
        ssh = openssh.ssh_binary() or "ssh"
        agent = self.dest.flag("agent", True)
        pipe = openssh.start(openssh.argv(ssh, self.dest, self.timeout, known_hosts, key_file, agent), self.timeout)
        try:
            sftp = paramiko.SFTPClient(pipe)  # type: ignore[arg-type]
        except (paramiko.SSHException, OSError, EOFError):
            err = openssh.failure(pipe, self.dest, known_hosts)  # ssh has ended: why, from its messages
            pipe.close()
            raise err from None
        except BaseException:
            pipe.close()
            raise
        self.client: paramiko.SSHClient | None = None
        self.sftp, self.pipe = sftp, pipe

    def _connect_paramiko(self, known_hosts: str, key_file: str | None) -> None:
        self.pipe = None
        client = paramiko.SSHClient()
        try:
            if os.path.exists(known_hosts):
                client.load_host_keys(known_hosts)
            trust = self.dest.flag("trust_unknown_host")
            client.set_missing_host_key_policy(_Trust() if trust else _Refuse(known_hosts))
            client.connect(
                self.dest.host,
                self.dest.port or 22,
                username=self.dest.user or getpass.getuser(),
                password=self.dest.secret("password"),
                key_filename=key_file,
                passphrase=self.dest.secret("passphrase"),
                allow_agent=self.dest.flag("agent", True),
                look_for_keys=key_file is None,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
                transport_factory=_Transport,
            )
            # open_sftp(), but with the timeout set before the subsystem's first answer is awaited: a server
            # whose SFTP subsystem never answers hung the connection for ever.
            transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            channel.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(channel)
        except BaseException:
            client.close()
            raise
        self.client, self.sftp = client, sftp

    def _close(self) -> None:
        try:
            self.sftp.close()
        finally:
            if self.pipe is not None:
                self.pipe.close()
            if self.client is not None:
                self.client.close()

    def _alive(self) -> bool:
        if self.pipe is not None:
            return self.pipe.alive()
        transport = self.client.get_transport() if self.client is not None else None
        return transport is not None and transport.is_active()

    def _upload(self, src: BinaryIO, rel: bytes) -> None:
        final = join(self.dest.root, rel)
        tmp = temp_path(final)
        try:
            try:
                out = self.sftp.open(tmp, "wb", 0)  # written by _write with its own requests, not buffered
            except FileNotFoundError:
                self._makedirs(os.path.dirname(final))
                out = self.sftp.open(tmp, "wb", 0)
            try:
                self._close_file(out, self._write(out, src))
            finally:
                out.close()  # after an error; a no-op once _close_file closed it
            self.sftp.posix_rename(tmp, final)
        except BaseException:
            self._remove_quietly(tmp)
            raise

    def _write(self, out: paramiko.SFTPFile, src: BinaryIO) -> deque[int]:
        """Send ``src`` as pipelined write requests, without waiting for each reply (the difference is 10x on
        a WAN); returns the requests not answered yet.  Past WINDOW outstanding requests, one reply is read per
        request sent, so the pipeline stays full: paramiko's own pipelined write instead waited for every
        outstanding reply each hundred writes, leaving the connection idle meanwhile, and went through two layers
        of Python buffering per packet (measured: 158 against 152 MB/s for 40 files of 20 MB, 4 connections)."""
        size = self._write_size(out)
        reqs: deque[int] = deque()
        offset = 0
        while chunk := src.read(size):
            reqs.append(self.sftp._async_request(type(None), CMD_WRITE, out.handle, int64(offset), chunk))
            offset += len(chunk)
            if len(reqs) >= 2 * WINDOW:  # read the older half's replies, most of them here already, in one go
                while len(reqs) > WINDOW:
                    self.sftp._read_response(reqs.popleft())  # raises on a failed write
        return reqs

    def _close_file(self, out: paramiko.SFTPFile, reqs: deque[int]) -> None:
        """Close ``out`` with one wait, for the replies to its last writes and to the close together (the
        server answers in order), where paramiko's close() sends the close only once the writes are answered:
        for small files, those waits were a good part of the time.  Each write's reply is checked: paramiko's
        own close() skips the replies to the last pipelined writes, so a failed write (a full disk) went
        unnoticed.  A failed write or close raises here, before the rename: a partial file never takes the
        final name."""
        paramiko.file.BufferedFile.close(out)  # closed for paramiko (unbuffered: nothing to flush): one CLOSE only
        num = self.sftp._async_request(type(None), CMD_CLOSE, out.handle)
        while reqs:  # the writes not answered yet, in the order they went
            self.sftp._read_response(reqs.popleft())  # raises on a failed write
        self.sftp._read_response(num)  # raises if the close failed

    def _write_size(self, out: paramiko.SFTPFile) -> int:
        """The largest write whose request fits in one SSH packet.  A full 32 KB write does not (the server's
        packets hold 32 KB with the request's header): paramiko sent each as two packets, a big one and one of a
        few dozen bytes, each encrypted and sent on its own, in Python."""
        # What paramiko's Channel puts in one packet; over ssh's pipe, what ssh puts in one (OpenSSH's 32 KB).
        packet = (CHUNK if self.pipe is not None else self.sftp.sock.out_max_packet_size) - 64
        return max(1024, min(CHUNK, packet - WRITE_HEADER - len(out.handle)))

    def _delete(self, rel: bytes) -> None:
        try:
            self.sftp.remove(join(self.dest.root, rel))
        except FileNotFoundError:
            pass

    def _stat(self, rel: bytes) -> RemoteStat | None:
        try:
            st = self.sftp.stat(join(self.dest.root, rel))
        except FileNotFoundError:
            return None
        return RemoteStat(st.st_size or 0, st.st_mtime)

    def _makedirs(self, path: bytes) -> None:
        # Deepest first: in the usual case only the last one or two components are missing.
        try:
            try:
                self.sftp.mkdir(path)
            except FileNotFoundError:
                parent = os.path.dirname(path)
                if parent in (path, b""):
                    raise
                self._makedirs(parent)
                self.sftp.mkdir(path)  # may fail as "exists" when another connection got there first: below
        except OSError as exc:
            try:
                is_dir = stat.S_ISDIR(self.sftp.stat(path).st_mode or 0)
            except OSError:
                is_dir = False
            if not is_dir:  # already there (another connection made it) is fine
                raise PermanentError(f"cannot create directory {os.fsdecode(path)!r}: {exc}") from exc

    def _remove_quietly(self, path: bytes) -> None:
        try:
            self.sftp.remove(path)
        except Exception:
            pass  # the connection may be gone; a stale .fc-*.tmp file is harmless

    def classify(self, exc: BaseException) -> FCError:
        if isinstance(exc, paramiko.BadHostKeyException):
            return AuthError(f"host key mismatch: {exc} (possible man-in-the-middle; check, then fix known_hosts)")
        if isinstance(exc, paramiko.PasswordRequiredException):
            return AuthError(f"the key file needs a passphrase: {exc}")
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthError(f"authentication refused: {exc}")
        if isinstance(exc, NoValidConnectionsError):  # every address refused: one message, not paramiko's
            return super().classify(next(iter(exc.errors.values())))
        if isinstance(exc, paramiko.SSHException):
            return TransientError(f"SSH: {exc}")  # banner timeouts, dropped connections, failed negotiation
        # paramiko reports a dropped connection as a bare OSError("Socket is closed"), like SFTP's "Failure".
        if isinstance(exc, OSError) and exc.errno is None and not (hasattr(self, "sftp") and self._alive()):
            return TransientError(f"connection lost: {exc}")
        return super().classify(exc)


def _encrypted(key_file: str) -> bool:
    """Whether the private key file needs a passphrase (one that cannot be read counts as not: ssh will say)."""
    try:
        paramiko.PKey.from_path(key_file)
    except paramiko.PasswordRequiredException:
        return True
    except Exception as exc:  # PEM keys: cryptography's TypeError "Key is password-protected, but ..."
        return "password" in str(exc)
    return False
