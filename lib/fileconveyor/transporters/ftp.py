"""ftp (ftp://, ftps://): deliver over FTP with ftplib, in passive mode, optionally with explicit TLS.

Settings:
    tls        yes: explicit FTPS (AUTH TLS) on an ftp:// URL; ftps:// always uses it
    ca_file    PEM file of the certificate authorities to trust for FTPS (default: the system's)
    passive    no: active mode instead of passive (default yes)
The password comes from FC_<NAME>_PASSWORD, FC_PASSWORD or a private config file; @ : / in it are fine, since
it never goes through a URL.

    ftp://www@host/htdocs  +  upload(b"/tmp/work/a.css", b"css/a.css")  ->  /htdocs/css/a.css on host
"""

from __future__ import annotations

import ftplib
import io
import os
import ssl
import stat
from typing import Any, BinaryIO, ClassVar

from ..errors import ConfigError, FCError
from .base import AuthError, PermanentError, RemoteStat, TransientError, join, parent_dirs, temp_path, unchanged
from .confine import DIR, MISSING, UNKNOWN, CheckedDirs, parent_and_name
from .destination import Destination
from .ftp_list import entry_kind

SEND_BLOCK = 32 * 1024  # bytes per write of a file's data (_store says why not sendfile, and why this size)


class _FTP_TLS(ftplib.FTP_TLS):
    """Data connections resume the control connection's TLS session: vsftpd and ProFTPD refuse them otherwise."""

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[Any, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


class FTP(CheckedDirs):
    """Uploads over FTP or explicit FTPS, to a temporary name then RNFR/RNTO; each directory below the root is
    checked in the listing of the one above (ftp_list.py, confine.py)."""

    name = "ftp"
    schemes = ("ftp", "ftps")
    settings: ClassVar[dict[str, str]] = {
        "tls": "yes: explicit FTPS (AUTH TLS) on an ftp:// URL (ftps:// always uses it)",
        "ca_file": "PEM file of the certificate authorities trusted for FTPS (default: the system's)",
        "passive": "no: use active mode (default yes)",
    }
    default_connections = 2  # many FTP servers limit connections per user to a handful

    def __init__(self, dest: Destination):
        super().__init__(dest)
        if not dest.host:  # ftp:///dir was tried as host "": "starting anyway", its files queued for ever (exit 4)
            raise ConfigError(f"{dest}: no host: write {dest.scheme}://user@HOST/dir")

    def _connect(self) -> None:
        tls = self.dest.scheme == "ftps" or self.dest.flag("tls")
        if tls:
            context = ssl.create_default_context(cafile=self.dest.settings.get("ca_file"))
            ftp: ftplib.FTP = _FTP_TLS(context=context, timeout=self.timeout)
        else:
            ftp = ftplib.FTP(timeout=self.timeout)
        # latin-1 maps bytes 1:1 to characters, so names go to the server exactly as the bytes we were given.
        ftp.encoding = "latin-1"
        try:
            ftp.connect(self.dest.host, self.dest.port or 21, timeout=self.timeout)
            ftp.login(_s(self.dest.user or "anonymous"), _s(self.dest.secret("password") or ""))
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(self.dest.flag("passive", True))
            ftp.voidcmd("TYPE I")
        except BaseException:
            ftp.close()
            raise
        self.ftp = ftp

    def _close(self) -> None:
        self.dirs.clear()
        # No QUIT: after an error the server may be hung, and waiting out a timeout to say goodbye helps nobody.
        self.ftp.close()

    def _alive(self) -> bool:
        try:
            self.ftp.voidcmd("NOOP")
            return True
        except Exception:
            return False

    def check_name(self, rel: bytes) -> bytes:
        # An FTP command is one CRLF-terminated line: such a name cannot be sent, only mangled.
        if b"\n" in rel or b"\r" in rel:
            raise PermanentError(f"{self.dest}: FTP cannot carry a line break in a file name: {rel!r}")
        # Servers read names as UTF-8 (RFC 2640); pyftpdlib, for one, silently replaces other bytes.
        try:
            rel.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(f"{self.dest}: FTP cannot carry a file name that is not UTF-8: {rel!r}") from None
        return rel

    def _check_root(self) -> None:
        # FTP cannot tell whether a directory is writable without writing: an empty temporary file, removed.
        probe = temp_path(join(self.dest.root, b"probe"))
        self._remove_quietly(probe)  # as an upload does: never write through whatever has that name
        try:
            self.ftp.storbinary(f"STOR {_s(probe)}", io.BytesIO(b""))
        except ftplib.error_perm:
            if not self.dest.root:
                raise
            self._make_root()  # a missing root is created, as the first upload would
            self.ftp.storbinary(f"STOR {_s(probe)}", io.BytesIO(b""))
        self.ftp.voidcmd(f"DELE {_s(probe)}")

    def _upload(self, src: BinaryIO, rel: bytes) -> None:
        head, _ = parent_and_name(rel)
        final = join(self.dest.root, rel)
        tmp = temp_path(final)
        try:
            self._check_dirs(head, create=True)
            # FTP has no "create, never overwrite": remove whatever has the temporary (predictable) name first,
            # so that a link planted there is not written through.
            self._remove_quietly(tmp)
            try:
                sent = self._store(tmp, src)
            except ftplib.error_perm:
                # Most likely a missing directory (the root, or one gone since it was checked): make, retry.
                self.dirs.clear()
                if head:
                    self._check_dirs(head, create=True)
                else:
                    self._make_root()
                src.seek(0)
                sent = self._store(tmp, src)
            unchanged(src, sent)  # _store sends up to EOF: a shrunk file would go out partial
            self.ftp.sendcmd(f"RNFR {_s(tmp)}")
            self.ftp.voidcmd(f"RNTO {_s(final)}")
        except BaseException:
            self.dirs.clear()
            self._remove_quietly(tmp)
            raise

    def _store(self, path: bytes, src: BinaryIO) -> int:
        """STOR ``src`` from where it is to its end; how many bytes went.  Not ftplib's storbinary: that sends
        TYPE I before every file (a round trip; the session is binary from _connect on, and _kind sets it back
        after a LIST) and makes a new block for each read.

        To a server on this host, SEND_BLOCK bytes per write, not sendfile(2), although that costs us a copy:
        with sendfile the server's
        receiving thread is the first to read the file's pages (cold, from memory), and over loopback it also
        does our sending (queued data goes out as its acknowledgements come back).  A one-thread server such as
        pyftpdlib sets the pace of a transfer: 20 files of 20 MB over 4 connections took it 0.51 s of CPU with
        sendfile, 0.35 s with 32 KB writes (rclone's: 0.44 s), for about 0.15 s more of ours; 64 KB and larger
        writes leave it more, the blocks being out of the shared cache by the time it reads them
        (docs/benchmarks.md, "FTP, large files").  To a server on another host none of that holds (its receiving
        side is its network card's and its own kernel's): a regular file goes with sendfile, sparing our CPU the
        copy, as before."""
        sent = 0
        with self.ftp.transfercmd(f"STOR {_s(path)}") as conn:
            if not isinstance(conn, ssl.SSLSocket) and not _same_host(conn) and _regular(src):
                sent = conn.sendfile(src, src.tell())  # to the end of the file (TLS encrypts in user space: no)
            else:  # a pipe (sendfile would take its size, 0, as empty), TLS, or a server on this host
                block = bytearray(SEND_BLOCK)
                view = memoryview(block)
                while n := src.readinto(block):
                    conn.sendall(view[:n])
                    sent += n
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()  # the TLS close_notify: the server's sign that the file is complete
        self.ftp.voidresp()
        return sent

    def _delete(self, rel: bytes) -> None:
        if not self._check_dirs(parent_and_name(rel)[0], create=False):
            return
        try:
            self.ftp.voidcmd(f"DELE {_s(join(self.dest.root, rel))}")
        except ftplib.error_perm:
            if self._stat(rel) is not None:  # 550 means both "no such file" and "not allowed"
                raise

    def _remove_dir(self, path: bytes) -> bool:
        try:
            self.ftp.voidcmd(f"RMD {_s(path)}")
        except ftplib.error_perm:  # 550: not empty (or not allowed)
            return False
        return True

    def _stat(self, rel: bytes) -> RemoteStat | None:
        if not self._check_dirs(parent_and_name(rel)[0], create=False):
            return None
        try:
            reply = self.ftp.sendcmd(f"SIZE {_s(join(self.dest.root, rel))}")
        except ftplib.error_perm:
            return None
        return RemoteStat(int(reply.split()[1]))

    def _entry_kind(self, rel: bytes, create: bool) -> str:
        """As far as the listing of the directory above shows (ftp_list.py)."""
        above, name = parent_and_name(rel)
        kind = self._kind(above, name, create)
        if kind in (MISSING, UNKNOWN) and create:
            try:
                self.ftp.voidcmd(f"MKD {_s(join(self.dest.root, rel))}")
                self.made_dirs.append(rel)
                # Made by us just now: a real directory (MKD fails on any name that exists, a link included),
                # so no second LIST (four commands and a data connection) to see it.
                return DIR
            except ftplib.error_perm:
                pass  # 550 is both "exists" (another connection made it) and "cannot": the listing says
            if kind == MISSING:
                # Still not listed: a name the server hides (vsftpd hides dot names): the STOR will tell.
                kind = self._kind(above, name, create)
                kind = UNKNOWN if kind == MISSING else kind
        return kind

    def _kind(self, above: bytes, name: bytes, create: bool) -> str:
        """What ``name`` is in directory ``above`` (below the root), from a LIST of ``above``."""
        where = join(self.dest.root, above) if above else (self.dest.root or b".")
        lines: list[str] = []
        try:
            try:
                self.ftp.retrlines(f"LIST {_s(where)}", lines.append)
            finally:
                # retrlines switched the session to TYPE A; back to binary (_connect), which SIZE needs: in
                # ASCII mode pyftpdlib refuses it (550, read as "no such file") and others count CRLF bytes.
                self.ftp.voidcmd("TYPE I")
        except ftplib.error_perm:
            if create and not above:
                self._make_root()
            return MISSING  # the directory (the root, unless it went away) is missing: nothing beneath it
        return entry_kind(lines, _s(name))

    def _make_root(self) -> None:
        """Make the root, and the directories above it, as the user named them (links there are theirs)."""
        for d in parent_dirs(self.dest.root + b"/x"):
            try:
                self.ftp.voidcmd(f"MKD {_s(d)}")
            except ftplib.error_perm:
                pass  # exists, or cannot: the STOR that follows says

    def _remove_quietly(self, path: bytes) -> None:
        try:
            self.ftp.voidcmd(f"DELE {_s(path)}")
        except Exception:
            pass  # the connection may be gone; a stale .fc-*.tmp file is harmless

    def classify(self, exc: BaseException) -> FCError:
        text = str(exc).strip()
        if isinstance(exc, ftplib.error_perm):
            if text.startswith("530"):
                if self.dest.user and not self.dest.secret("password"):
                    # A newcomer's first FTP run: "530 Authentication failed" alone did not say what was missing.
                    where = self.dest.secret_source("password")
                    text = f"{text.rstrip('.')} (no password given: set {where}, or password = in a --config file)"
                return AuthError(f"login refused: {text}")
            return PermanentError(text)
        if isinstance(exc, (ftplib.error_temp, ftplib.error_reply, ftplib.error_proto)):
            return TransientError(text)  # 4xx means "later"; a garbled reply means a connection to drop
        if isinstance(exc, ssl.SSLCertVerificationError):
            return AuthError(f"TLS certificate refused: {exc.verify_message}")
        if isinstance(exc, ssl.SSLError):
            return TransientError(f"TLS: {text}")
        return super().classify(exc)


def _s(text: bytes | str) -> str:
    """What to hand ftplib (set to latin-1) so that the server receives these exact bytes, or this UTF-8."""
    return (text.encode("utf-8") if isinstance(text, str) else text).decode("latin-1")


def _same_host(conn: Any) -> bool:
    """Whether the data connection ``conn`` stays on this host (its two ends at one address: loopback, or this
    host's own address, which Linux also routes through loopback); unknown: as another host."""
    try:
        return conn.getsockname()[0] == conn.getpeername()[0]
    except (OSError, IndexError, TypeError):
        return False


def _regular(src: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(src.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
