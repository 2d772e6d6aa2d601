"""sftp (sftp://): deliver over SSH: OpenSSH's ssh client or paramiko (sftp_openssh.py says which, and why).

Settings:
    key_file            private key to log in with (its passphrase: FC_<NAME>_PASSPHRASE or FC_PASSPHRASE)
    agent               no: don't ask the SSH agent for keys (default yes)
    known_hosts         known_hosts file the server's host key must be in (default ~/.ssh/known_hosts)
    trust_unknown_host  yes: accept any host key not in the known_hosts file (never the default; nothing is saved)
    engine              auto (default): ssh for key and agent logins, paramiko for the rest; openssh or paramiko
    share_login         no: every connection logs in on its own (default yes: ssh sessions share one login,
                        ssh_master.py says how and why)
A password, if any, comes from FC_<NAME>_PASSWORD, FC_PASSWORD or a private config file.
Without key_file, the usual ~/.ssh/id_* keys are tried, as ssh does.

    sftp://deploy@host:2222/var/www/static  +  upload(b"/tmp/work/a.css", b"css/a.css")  ->  /var/www/static/css/a.css

The SFTP requests are sftp_client's, over either engine's channel.
"""

from __future__ import annotations

import base64
import os
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, ClassVar

from ..errors import ConfigError, FCError
from ..report import get_logger
from . import sftp_openssh as openssh
from . import ssh_master
from .base import CLOSE_WAIT, AuthError, PermanentError, R, RemoteStat, TransientError, join, temp_path, unchanged
from .confine import DIR, FILE, LINK, MISSING, CheckedDirs, parent_and_name
from .destination import Destination
from .sftp_client import SFTPSession, SourceChanged

if TYPE_CHECKING:
    import paramiko


class SFTP(CheckedDirs):
    """Uploads over SFTP, host key checked, to a temporary name then posix-rename; each directory below the root
    is checked by lstat (confine.py)."""

    name = "sftp"
    schemes = ("sftp",)
    settings: ClassVar[dict[str, str]] = {
        "key_file": "private key file to log in with (passphrase from FC_<NAME>_PASSPHRASE or FC_PASSPHRASE)",
        "agent": "no: don't use the SSH agent (default yes)",
        "known_hosts": "known_hosts file holding the server's host key (default ~/.ssh/known_hosts)",
        "trust_unknown_host": "yes: accept a host key that is in no known_hosts file (never the default)",
        "engine": "auto (default): OpenSSH's ssh client when the login needs no password or passphrase, "
        "else paramiko; openssh or paramiko to choose",
        "share_login": "no: each connection logs in on its own (default yes: OpenSSH's sessions to this "
        "destination share one login, an ssh master process)",
    }
    default_connections = 4  # OpenSSH's MaxStartups/MaxSessions tolerate this; more rarely helps

    def __init__(self, dest: Destination):
        super().__init__(dest)
        if not dest.host:  # sftp:///dir was tried as host "": "starting anyway", its files queued for ever (exit 4)
            raise ConfigError(f"{dest}: no host: write sftp://user@HOST/dir")
        key_file = _key_file(dest)
        if key_file and not os.path.isfile(key_file):
            raise ConfigError(f"{dest}: key_file {key_file} does not exist (or is not a file)")
        self.engine = engine_for(dest)
        self.pipe: openssh.PipeChannel | None = None
        self.client: paramiko.SSHClient | None = None
        self.share_login = dest.flag("share_login", True)
        self.master: ssh_master.Master | None = None  # the shared login the ssh session is on, if any
        # Held by the thread using the connection; close() from another thread (fc-transport stopping) waits
        # for it, so that it never closes pipes under a running upload (their fd numbers could be reused by a
        # file opened meanwhile, and the upload would write its stream into that file).
        self._busy = threading.RLock()

    @classmethod
    def isolated_for(cls, dest: Destination) -> bool:
        # paramiko encrypts and frames every SSH packet in Python: its connections get a process each.  With
        # ssh doing that, the Python left per connection is a few requests per MB: threads do, and start at once.
        return engine_for(dest) == "paramiko"

    def _run(self, what: str, rel: bytes, op: Callable[[], R]) -> R:
        with self._busy:
            if self.connected and self.pipe is not None and not self.pipe.alive():
                # Its ssh ended while idle (the shared login went, with the other connections' sessions): a new
                # session now, rather than this operation failing on the dead one first.  Said, as a connection
                # lost during an operation is (a retry's warning): ssh does not end on its own.
                get_logger(__name__).warning(
                    "%s: connection lost while idle (its ssh ended); opening a new one", self.dest.host
                )
                self.close()
            return super()._run(what, rel, op)

    def close(self) -> None:
        # An upload in progress gets a moment to finish; then its ssh (or SSH connection) is ended under it, so
        # that it fails at once (the file stays queued) and stopping never waits for a whole upload.
        if not self._busy.acquire(timeout=CLOSE_WAIT):
            if self.pipe is not None:
                self.pipe.proc.kill()
            elif self.client is not None:
                self.client.close()
            # No time limit: the upload, failing, closes the pipes itself under the lock; returning before it
            # let go could hand their fd numbers to a file opened meanwhile, whatever the load.
            self._busy.acquire()
        try:
            super().close()
        finally:
            self._busy.release()

    def _connect(self) -> None:
        known_hosts = os.path.expanduser(self.dest.settings.get("known_hosts", "~/.ssh/known_hosts"))
        key_file = _key_file(self.dest)
        if self.engine == "openssh":
            self._connect_openssh(known_hosts, key_file)
        else:
            self._connect_paramiko(known_hosts, key_file)

    def _connect_openssh(self, known_hosts: str, key_file: str | None) -> None:
        ssh = openssh.ssh_binary() or "ssh"
        agent = self.dest.flag("agent", True)
        options = openssh.options(ssh, self.dest, self.timeout, known_hosts, key_file, agent)
        master = ssh_master.master_for(options, self.dest.host) if self.share_login else None
        try:
            if master is not None and not master.join(
                self.timeout, lambda text, status: openssh.said(text, status, self.dest, known_hosts)
            ):
                master = None  # this session logs in on its own
        except AuthError as err:  # the shared login was refused: what this session's own login would say
            raise self._auth_hint(err, key_file) from None
        try:
            try:
                pipe, sftp = self._session(options, master, known_hosts)
            except openssh.Unexplained:
                if master is None:
                    raise
                # Over a shared login, ssh leaves the messages to the master (whose stderr is gone): this once,
                # a session of its own, which says why (no SFTP subsystem...), or works (then the shared login
                # is what failed: the next sessions log in on their own for a while).
                alive = ssh_master.listening(master.path)  # not: the master went away (the server restarted)
                master.leave()
                master, shared = None, master
                pipe, sftp = self._session(options, None, known_hosts)
                if alive:
                    shared.log_in_alone()
        except AuthError as err:
            raise self._auth_hint(err, key_file) from None
        except BaseException:
            if master is not None:
                master.leave()
            raise
        self.client = None
        self.sftp, self.pipe, self.master = sftp, pipe, master

    def _session(
        self, options: list[str], master: ssh_master.Master | None, known_hosts: str
    ) -> tuple[openssh.PipeChannel, SFTPSession]:
        """An SFTP session over a new ssh (over ``master``'s login, if any); the error ssh's messages say if
        none started."""
        extra = master.session_options() if master is not None else []
        pipe = openssh.start(openssh.session_argv(options, self.dest.host, extra), self.timeout)
        try:
            return pipe, SFTPSession(pipe)
        except (OSError, EOFError) as exc:
            err = openssh.failure(pipe, self.dest, known_hosts, exc)  # why, from ssh's messages
            pipe.close()
            raise err from None
        except BaseException:
            pipe.close()
            raise

    def _auth_hint(self, err: AuthError, key_file: str | None) -> AuthError:
        if key_file and _encrypted(key_file):
            return AuthError(
                f"{err} (the key file is encrypted and ssh cannot ask for its passphrase: load it into the "
                f"SSH agent, or use engine=auto with the passphrase in {self.dest.secret_source('passphrase')})"
            )
        return err

    @staticmethod
    def _end_session(pipe: openssh.PipeChannel | None, master: ssh_master.Master | None) -> None:
        """End an ssh session (first), then leave the shared login it was on (the last one out ends it)."""
        try:
            if pipe is not None:
                pipe.close()
        finally:
            if master is not None:
                master.leave()

    def _connect_paramiko(self, known_hosts: str, key_file: str | None) -> None:
        from . import sftp_paramiko  # only here: the import is a quarter of a second

        self.pipe = None
        client, channel, max_write = sftp_paramiko.connect(self.dest, self.timeout, known_hosts, key_file)
        try:
            self.sftp = SFTPSession(channel, max_write)
        except BaseException:
            client.close()
            raise
        self.client = client

    def _close(self) -> None:
        self.dirs.clear()
        pipe, master, self.master = self.pipe, self.master, None
        self._end_session(pipe, master)
        if self.client is not None:
            self.client.close()

    def _alive(self) -> bool:
        if self.pipe is not None:
            return self.pipe.alive()
        if self.client is not None:
            from . import sftp_paramiko

            return sftp_paramiko.alive(self.client)
        return False

    def _check_root(self) -> None:
        # Writable? Only writing tells (permissions, ACLs, a read-only mount): an empty temporary file, removed.
        # Opened as an upload opens its temporary file: a missing root is created, nothing is written through.
        probe = temp_path(join(self.dest.root, b"probe"))
        handle = self._open_tmp(b"", probe)
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            self.sftp.write_file(handle, fd, 0, probe)
        finally:
            os.close(fd)
        self.sftp.remove(probe)

    def _upload(self, src: BinaryIO, rel: bytes) -> None:
        head, _ = parent_and_name(rel)
        final = join(self.dest.root, rel)
        tmp = temp_path(final)
        st = os.fstat(src.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else None  # None: a pipe, read to its end
        try:
            self._check_dirs(head, create=True)
            if size is None or not self.sftp.create_small(tmp, src.fileno(), size):
                handle = self._open_tmp(head, tmp)
                self.sftp.write_file(handle, src.fileno(), size, tmp)  # raises if any write failed: no rename
            unchanged(src)  # nor when the file changed meanwhile
            self.sftp.posix_rename(tmp, final)  # replaces a link at ``final`` itself, never what it points to
        except BaseException:
            self.dirs.clear()  # whatever failed, look at the directories again next time
            self._remove_quietly(tmp)
            raise

    def _open_tmp(self, head: bytes, tmp: bytes) -> bytes:
        """A handle on the new temporary file ``tmp``: exclusive, so that a link or file at that (predictable)
        name is never written through but removed first (a crashed upload's, or a planted one)."""
        try:
            return self.sftp.open_write(tmp, exclusive=True)
        except FileNotFoundError:  # the root is missing, or a directory went away since it was checked
            self.dirs.clear()
            self._check_dirs(head, create=True)
            if not head and self.dest.root:
                self._makedirs(self.dest.root)
        except OSError as exc:
            if not self._plain_failure(exc):
                raise
            self._remove_quietly(tmp)
        return self.sftp.open_write(tmp, exclusive=True)

    def _delete(self, rel: bytes) -> None:
        try:
            if self._check_dirs(parent_and_name(rel)[0], create=False):
                self.sftp.remove(join(self.dest.root, rel))  # a link is removed itself, not what it points to
        except FileNotFoundError:
            pass
        except BaseException:
            self.dirs.clear()
            raise

    def _rmdir(self, rel: bytes) -> bool:
        try:
            return super()._rmdir(rel)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if self._plain_failure(exc) or isinstance(exc, PermissionError):
                return False  # "Failure": not empty, all SFTP v3 says
            raise

    def _remove_dir(self, path: bytes) -> bool:
        self.sftp.rmdir(path)
        return True

    def _stat(self, rel: bytes) -> RemoteStat | None:
        try:
            if not self._check_dirs(parent_and_name(rel)[0], create=False):
                return None
            st = self.sftp.stat(join(self.dest.root, rel))
        except FileNotFoundError:
            return None
        return RemoteStat(st.size or 0, st.mtime)

    def _entry_kind(self, rel: bytes, create: bool) -> str:
        """By lstat."""
        path = join(self.dest.root, rel)
        try:
            mode = self.sftp.lstat(path).mode
        except FileNotFoundError:
            if not create:
                return MISSING
            if self._mkdir(path, top=not parent_and_name(rel)[0]):
                self.made_dirs.append(rel)
            mode = self.sftp.lstat(path).mode
        if mode is None:
            raise PermanentError(f"the server does not say whether {os.fsdecode(path)!r} is a link: not writing there")
        return LINK if stat.S_ISLNK(mode) else DIR if stat.S_ISDIR(mode) else FILE

    def _mkdir(self, path: bytes, top: bool) -> bool:
        """Make ``path``, and when it is ``top`` (just below the root) the root too, if missing; whether this
        call made ``path``."""
        try:
            try:
                self.sftp.mkdir(path)
            except FileNotFoundError:
                if not top:
                    raise
                self._makedirs(os.path.dirname(path))  # the root, and above it, as the user named it
                self.sftp.mkdir(path)
        except OSError as exc:
            if not self._plain_failure(exc):
                raise  # "Failure": most likely another connection made it; the lstat that follows says
            return False
        return True

    def _plain_failure(self, exc: OSError) -> bool:
        """Whether ``exc`` is the server's bare "Failure" status, all SFTP v3 says for "it exists"."""
        return type(exc) is OSError and exc.errno is None and not self.sftp.broken

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
                is_dir = stat.S_ISDIR(self.sftp.stat(path).mode or 0)
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
        sftp: SFTPSession | None = getattr(self, "sftp", None)
        if sftp is not None and sftp.broken:
            self.close()  # the stream is out of step (even after a local error): no later request can use it
        if self.engine == "paramiko":
            from . import sftp_paramiko

            known = sftp_paramiko.classify(exc)
            if isinstance(known, FCError):
                return known
            exc = known
        if isinstance(exc, SourceChanged):
            return TransientError(f"{exc}: sent again")
        # A dropped connection can show as a bare OSError (paramiko's "Socket is closed"), like SFTP's "Failure".
        if isinstance(exc, OSError) and exc.errno is None and not (hasattr(self, "sftp") and self._alive()):
            return TransientError(f"connection lost: {exc}")
        return super().classify(exc)


def engine_for(dest: Destination) -> str:
    """openssh or paramiko: see sftp_openssh.py for why and when."""
    engine = dest.settings.get("engine", "auto")
    if engine not in ("auto", "openssh", "paramiko"):
        raise ConfigError(f"{dest}: engine must be auto, openssh or paramiko, not {engine!r}")
    if engine == "openssh" and openssh.ssh_binary() is None:
        raise ConfigError(f"{dest}: engine=openssh needs OpenSSH's ssh client (Debian: openssh-client)")
    if engine != "auto":
        return engine
    if openssh.ssh_binary() is None or dest.flag("trust_unknown_host"):
        return "paramiko"
    if dest.secret("password") or dest.secret("passphrase"):
        return "paramiko"
    key_file = _key_file(dest)
    if key_file and _encrypted(key_file):
        return "paramiko"  # says "needs a passphrase", where ssh in batch mode only says "denied"
    return "openssh"


def _key_file(dest: Destination) -> str | None:
    key_file = dest.settings.get("key_file")
    return os.path.expanduser(key_file) if key_file else None


def _encrypted(key_file: str) -> bool:
    """Whether the private key file needs a passphrase; one that cannot be read counts as not (ssh will say).
    Read here rather than by paramiko, whose import would cost every start a quarter of a second."""
    try:
        with open(key_file, "rb") as f:
            text = f.read(1 << 16)
    except OSError:
        return False
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or b"Proc-Type: 4,ENCRYPTED" in text:
        return True  # PKCS#8 or traditional PEM, encrypted
    begin, end = b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----END OPENSSH PRIVATE KEY-----"
    if begin not in text:
        return False
    try:
        blob = base64.b64decode(text.split(begin, 1)[1].split(end, 1)[0])
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"
    # The key format's first field after its magic is the cipher name, "none" when not encrypted.
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    n = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    return blob[len(magic) + 4 : len(magic) + 4 + n] != b"none"
