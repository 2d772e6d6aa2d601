"""The sftp transporter's openssh engine: OpenSSH's own ssh client carries the SFTP session.

Why: with paramiko, every 32 KB SSH packet is encrypted, framed and acknowledged in Python; on 2 cores that
capped 20 MB files at about 0.6-0.7x rclone's throughput.  Here ``ssh -s sftp`` does the SSH part in C, and
sftp_client frames SFTP requests over the ssh process's pipes; the file's bytes go from the page cache into
the pipe with splice(2), never through Python.  What is left in Python is a few requests per MB, so these
connections are threads of fc-transport (no worker processes), and nothing imports paramiko.

It is used (engine=auto, the default) when ssh is installed and the login needs no secret from us: a key file
or the usual ~/.ssh keys or the agent, and a host key checked against known_hosts.  A password, a key
passphrase, an encrypted key file or trust_unknown_host=yes go through paramiko (engine=paramiko forces it).
ssh runs with ``-F none``: the user's ssh_config does not change what a destination URL means.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import math
import os
import select
import shutil
import subprocess
from collections.abc import Sequence

from ..children import end
from ..errors import FCError
from .base import AuthError, PermanentError, TransientError
from .destination import Destination
from .sftp_client import ProtocolError, SourceChanged

STOP_WAIT = 5.0  # seconds ssh gets to end the session after its input closes
PIPE_SIZE = 1 << 20
SPLICE_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 0)
# splice(2) refusing this pair of files (a file system without splice support, an old kernel), not failing
NO_SPLICE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV)


class Unexplained(TransientError):
    """ssh ended saying nothing known here (resolver failures, resets: worth another try; or a session over a
    shared login, whose ssh leaves the messages to the master)."""


def ssh_binary() -> str | None:
    return shutil.which("ssh")


class PipeChannel:
    """sftp_client's channel over an ssh process's stdin and stdout.  Every wait is
    bounded by ``timeout``: ssh's keepalives catch a dead server, not an SFTP server that stopped answering."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float):
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.timeout = timeout
        self._w, self._r = proc.stdin.fileno(), proc.stdout.fileno()
        for fd in (self._w, self._r):
            try:  # 1 MiB pipes (Linux): fewer wake-ups of ssh and of us; 12-29% more MB/s at 4 connections
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]
            except (AttributeError, OSError):
                pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works, a little slower
        for fd in (self._w, self._r):
            os.set_blocking(fd, False)  # reads and writes wait below, for at most the timeout
        self._splice = hasattr(os, "splice")  # Linux

    def _wait(self, fd: int, event: int) -> None:
        poller = select.poll()
        poller.register(fd, event)
        if not poller.poll(self.timeout * 1000):
            raise TimeoutError(f"no answer from the SFTP server within {self.timeout:g} s")

    def sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._w, view) :]  # a dead ssh: BrokenPipeError, a transient error
            except BlockingIOError:
                self._wait(self._w, select.POLLOUT)

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of the file ``fd`` from ``offset``: with splice(2), page cache to pipe, the bytes
        never copied through Python; else pread and write."""
        end = offset + count
        while offset < end:
            if self._splice:
                try:
                    n = os.splice(fd, self._w, end - offset, offset_src=offset, flags=SPLICE_NONBLOCK)
                except BlockingIOError:
                    self._wait(self._w, select.POLLOUT)
                    continue
                except OSError as exc:
                    if exc.errno not in NO_SPLICE:
                        raise
                    self._splice = False  # this file system or kernel can't: the plain way, from here on
                    continue
            else:
                data = os.pread(fd, min(end - offset, PIPE_SIZE), offset)
                self.sendall(data)
                n = len(data)
            if n == 0:  # the file got shorter since its size was sent: finish the request, then say so
                self.sendall(bytes(end - offset))
                raise SourceChanged(f"the file shrank while it was being sent (at byte {offset})")
            offset += n

    def recv(self, n: int) -> bytes:
        while True:  # try first: most of the time the answer is there, and a poll() per read cost throughput
            try:
                return os.read(self._r, n)  # b"" when ssh ended
            except BlockingIOError:
                self._wait(self._r, select.POLLIN)

    def wait_readable(self) -> None:
        """Until there is something to read (at most the timeout)."""
        self._wait(self._r, select.POLLIN)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """End the session: ssh sees the end of its input, closes the channel and exits."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        end(self.proc, STOP_WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def option_value(text: str) -> str:
    """A path as an ssh -o value: ssh expands %-tokens in it and splits it at spaces."""
    text = text.replace("%", "%%")
    return f'"{text}"' if any(c.isspace() for c in text) else text


# AES-GCM first: with AES-NI both ends encrypt it several times faster than ssh's default first choice,
# chacha20-poly1305 (on 2 cores, sshd's decryption competes with everything else: 166 against 107 MB/s here).
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)


DEFAULT_KEYS = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa")


@functools.cache
def _ciphers(ssh: str) -> str | None:
    """PREFERRED_CIPHERS that this ssh knows (``ssh -Q cipher``), or None to leave ssh's own choice."""
    try:
        known = subprocess.run([ssh, "-Q", "cipher"], capture_output=True, timeout=10).stdout.decode().split()
    except (OSError, subprocess.SubprocessError):
        return None
    usable = [c for c in PREFERRED_CIPHERS if c in known]
    return ",".join(usable) if usable else None


def options(
    ssh: str, dest: Destination, timeout: float, known_hosts: str, key_file: str | None, agent: bool
) -> list[str]:
    """ssh and its options for a login to ``dest``: everything but the host (session_argv adds it)."""
    wait = max(1, math.ceil(timeout))
    options = {
        "BatchMode": "yes",  # never a prompt: a login that needs one fails, clearly
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": option_value(known_hosts),
        "ConnectTimeout": str(wait),  # the TCP connection and the banner exchange
        "ServerAliveInterval": str(max(1, math.ceil(timeout / 3))),  # a server silent for ~timeout: ssh exits
        "ServerAliveCountMax": "3",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
    }
    ciphers = _ciphers(ssh)
    if ciphers:
        options["Ciphers"] = ciphers
    if key_file:
        options["IdentitiesOnly"] = "yes"
        options["IdentityFile"] = option_value(key_file)
    if not agent:
        options["IdentityAgent"] = "none"
    out = [ssh, "-F", "none", "-T", "-x", "-a"]
    for key, value in options.items():
        out += ["-o", f"{key}={value}"]
    if not key_file:
        # ssh looks for its default keys in the home directory of the password database, paramiko (and the
        # rest of File Conveyor) in $HOME: name those in $HOME, so that a service or container that sets HOME
        # logs in with the same keys on either engine.
        for name in DEFAULT_KEYS:
            path = os.path.expanduser(f"~/.ssh/{name}")
            if os.path.isfile(path):
                out += ["-o", f"IdentityFile={option_value(path)}"]
    if dest.port:
        out += ["-p", str(dest.port)]
    if dest.user:
        out += ["-l", dest.user]
    return out


def session_argv(options: Sequence[str], host: str, extra: Sequence[str] = ()) -> list[str]:
    """The SFTP session's ssh command: ``options`` (options()), ``extra`` ones (a shared login's), the host."""
    # "--" and the host last: a host name starting with "-" is not taken for an option.
    return [*options, *extra, "-s", "--", host, "sftp"]


def start(cmd: Sequence[str], timeout: float) -> PipeChannel:
    proc = subprocess.Popen(
        list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    return PipeChannel(proc, timeout)


def failure(channel: PipeChannel, dest: Destination, known_hosts: str, exc: BaseException) -> FCError:
    """Why no SFTP session started (``exc``: what starting it raised), from ssh's exit and its messages."""
    alive = channel.alive()
    if channel.proc.stdin is not None:
        channel.proc.stdin.close()  # an ssh still running ends now, rather than being killed after STOP_WAIT
    end(channel.proc, STOP_WAIT)
    host = f"{dest.host}:{dest.port or 22}"
    if alive and isinstance(exc, ProtocolError):  # logged in, but what came back is not SFTP
        return PermanentError(f"{host}: {exc}")
    if alive and isinstance(exc, TimeoutError):  # logged in, but the SFTP server did not answer
        return TransientError(f"{host}: {exc}")
    text = channel.proc.stderr.read().decode("utf-8", "replace") if channel.proc.stderr else ""
    status = channel.proc.returncode
    return said(text, status, dest, known_hosts) or Unexplained(f"ssh: {_last(text, status)}")


def _last(text: str, status: int | None) -> str:
    # The lines that say why (a key file others can read, no common cipher), not only the last one.
    lines = [line.strip() for line in text.splitlines() if line.strip().strip("@")]
    return "; ".join(lines[-3:]) if lines else f"ssh exited with status {status}"


def said(text: str, status: int, dest: Destination, known_hosts: str) -> FCError | None:
    """The error ssh's messages ``text`` name (its exit ``status``), or None when they name no cause known here
    (resolver failures, resets: worth another try)."""
    host = f"{dest.host}:{dest.port or 22}"
    last = _last(text, status)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or ("host key for" in text.lower() and "changed" in text):
        return AuthError(f"host key mismatch for {host} (possible man-in-the-middle; check, then fix {known_hosts})")
    if "Host key verification failed" in text or ("No " in text and "host key is known" in text):
        return AuthError(
            f"host key of {host} is not in {known_hosts}: add it (ssh-keyscan) after checking it, "
            f"or set trust_unknown_host=yes"
        )
    if "Permission denied" in text or "Too many authentication failures" in text:
        return AuthError(f"authentication refused: {last}")
    if "contains invalid characters" in text or "Bad configuration option" in text or "no argument after" in text:
        return PermanentError(f"ssh refused the destination: {last}")
    if "subsystem request failed" in text:
        return PermanentError(f"{host} offers no SFTP subsystem: {last}")
    if "Connection refused" in text:
        return TransientError(f"connection refused by {host}")
    if "Could not resolve hostname" in text:  # the words of base.classify's, for paramiko's resolver failure
        return TransientError(f"cannot resolve {dest.host}: {last.rpartition(': ')[2]}")
    if "timed out" in text.lower():
        return TransientError(f"timed out connecting to {host}: {last}")
    return None
