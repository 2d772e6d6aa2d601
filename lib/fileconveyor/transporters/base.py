"""The interface every transporter shares, and what they have in common.

A transporter puts files at ``destination root + remote_rel`` and takes them away again.  The public methods
here do the parts that must never differ between protocols: refusing a remote_rel that would escape the root
(before any byte reaches a server), opening the local file, connecting lazily and again after a drop, and
turning every failure into exactly one of two errors:

- ``TransientError``: worth retrying later (timeouts, resets, refused connections, "try later" replies);
- ``PermanentError``: retrying will not help (authentication refused, permission denied, a name the protocol
  cannot carry).  ``AuthError`` is the permanent error of a whole destination.

Subclasses implement ``_connect``, ``_close``, ``_upload``, ``_delete``, ``_stat`` on checked paths, and extend
``classify`` for their library's exceptions.  ``_upload`` must be atomic: write ``temp_path(final)`` in the same
directory, then rename it over the final name, so a reader never sees a partial file.  A transporter that can
tell, cheaply and for sure, that the destination already holds the same content (setting ``skip_unchanged``)
returns ``UNCHANGED`` from ``_upload`` instead of sending it again; its ``_upload`` reads ``self.skip_unchanged``,
which ``upload(..., look_first=True)`` turns on for one call (a retry of work a killed process may have done).

A CDN in front of the destination (cf) says which paths to purge after a change (``invalidation_paths``) and
purges a batch of them (``invalidate``); fc-transport keeps them in its state file until they are sent.
"""

from __future__ import annotations

import abc
import errno
import os
import re
import sys
import time
from collections.abc import Callable
from typing import BinaryIO, ClassVar, TypeVar
from urllib.parse import quote

from ..digests import blake2b
from ..errors import ConfigError, Exit, FCError, RetryableError
from ..plain import Frozen
from ..sourcefile import Roots, Source, SourceFd, SourceFile, SourceGone, SourceRefused, open_source
from .destination import Destination

R = TypeVar("R")
F = TypeVar("F", SourceFile, SourceFd)
# Seconds close() from another thread gives an operation in progress before ending it under it.  Short: when
# fc-transport closes its connections, its runner has already given transfers their grace period.
CLOSE_WAIT = 1.0

IDLE_CHECK = 15.0  # seconds a connection may sit unused before it is checked again

COMMON_SETTINGS = {
    "timeout": "seconds any single network operation may take before it fails as transient (default 30)",
    "connections": "how many connections fc-transport opens to this destination (default: the transporter's)",
}

# OSError numbers that describe a passing condition rather than a wrong set-up.
TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EDQUOT,
    errno.EHOSTDOWN,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.ENETRESET,
    errno.ENETUNREACH,
    errno.ENOSPC,
    errno.EPIPE,
    errno.ETIMEDOUT,
}


class TransientError(RetryableError):
    """The operation failed for a reason expected to pass: retry later, with back-off."""


class PermanentError(FCError):
    """The operation failed and will fail again the same way: report it, don't retry."""

    exit = Exit.EVENTS_FAILED


class AuthError(PermanentError):
    """The destination refused us (credentials, unknown or changed host key): nothing will get through."""

    exit = Exit.CONFIG


class SourceMissing(PermanentError):
    """The local file vanished, or changed, before it could be sent; a newer event normally follows."""


UPLOADED = "uploaded"  # what upload() returns: the file was sent
UNCHANGED = "unchanged"  # ... or the destination already held this content (skip_unchanged): nothing sent


class RemoteStat(Frozen):
    """What a destination says of a file."""

    _fields = ("size", "mtime")

    def __init__(self, size: int, mtime: float | None = None):
        self.__dict__.update(size=size, mtime=mtime)

    size: int  # for the type checkers: set in __init__
    mtime: float | None


def unchanged(src: BinaryIO, sent: int | None = None) -> None:
    """SourceMissing when ``src`` changed while it was read (or ``sent`` is not its size): called by ``_upload``
    before the rename that publishes, so a torn copy never takes the final name."""
    if isinstance(src, SourceFile):
        try:
            src.check(sent)
        except SourceGone as exc:
            raise SourceMissing(str(exc)) from None


def safe_rel(remote_rel: bytes | str) -> bytes:
    """``remote_rel`` with ``.`` and empty components dropped; PermanentError when it could escape the root."""
    rel = remote_rel if type(remote_rel) is bytes else os.fsencode(remote_rel)
    parts = rel.split(b"/")
    # (find, not "in": bytes.__contains__ first tries its argument as an int, and builds and drops a TypeError)
    if _ODD_STEPS.isdisjoint(parts) and rel.find(b"\0") < 0:
        return rel  # the usual case: nothing to drop, nothing to refuse (what the checks below come to then)
    if b"\0" in rel:
        raise PermanentError(f"refusing remote path {rel!r}: it contains a NUL byte")
    if rel.startswith(b"/"):
        raise PermanentError(f"refusing remote path {rel!r}: it is absolute")
    if rel.endswith((b"/", b"/.")):
        raise PermanentError(f"refusing remote path {rel!r}: it names a directory")
    parts = [p for p in parts if p not in (b"", b".")]
    if b".." in parts:
        raise PermanentError(f"refusing remote path {rel!r}: '..' would leave the destination")
    if not parts:
        raise PermanentError(f"refusing remote path {rel!r}: it names no file")
    return b"/".join(parts)


_ODD_STEPS = frozenset((b"", b".", b".."))
# the bytes urllib.parse.quote(..., safe="/") leaves as they are
_URL_SAFE = re.compile(rb"[A-Za-z0-9_.~/-]*").fullmatch


def join(root: bytes, rel: bytes) -> bytes:
    """The remote path of ``rel`` under ``root`` (b"" root: relative to the login directory)."""
    return root.rstrip(b"/") + b"/" + rel if root else rel


def temp_path(final: bytes) -> bytes:
    """The temporary name of ``final``, next to it: same directory, so the rename is atomic on the server.

    Derived from ``final`` rather than random: when a crash (kill -9, power cut) interrupts an upload, the
    redone upload writes over the same temporary file instead of leaving the first one behind for ever.
    fc-transport never uploads one remote name twice at the same time (per-path order), so they never clash."""
    head, _, _ = final.rpartition(b"/")
    name = temp_name(final)
    return head + b"/" + name if head else name


def temp_name(final: bytes) -> bytes:
    """The last component of ``temp_path(final)``."""
    h = _TEMP_HASH.copy()  # (a copy of a made one: no keyword arguments to parse per file)
    h.update(final)
    return b".fc-" + h.hexdigest().encode() + b".tmp"


_TEMP_HASH = blake2b(digest_size=8)


def parent_dirs(path: bytes) -> list[bytes]:
    """The directories above ``path``, outermost first: b"/a/b/c" -> [b"/a", b"/a/b"]."""
    parts = path.split(b"/")[:-1]
    return [b"/".join(parts[: i + 1]) for i in range(len(parts)) if parts[i]]


class Transporter(abc.ABC):
    """Puts files on one destination.  One instance holds one connection; it is not thread-safe."""

    name: ClassVar[str] = ""  # the seed's name: symlink_or_copy, ftp, sftp
    schemes: ClassVar[tuple[str, ...]] = ()  # URL schemes it serves: file, ftp, ftps, sftp
    settings: ClassVar[dict[str, str]] = {}  # setting -> one-line description, for --list
    default_connections: ClassVar[int] = 1
    invalidation_batch: ClassVar[int] = 1000  # at most this many paths per invalidate() call
    has_dirs: ClassVar[bool] = False  # real directories, made on upload (file, ftp, sftp), not key prefixes
    # True: an operation on a small file is a few system calls of microseconds each (a local folder).  Threads
    # doing those at once spend more on handing the interpreter lock to each other, at every call, than on the
    # work: fc-transport's connections to such a destination take turns on small files (stages/transport/turns.py).
    takes_turns: ClassVar[bool] = False

    def __init__(self, dest: Destination):
        known = self.all_settings()
        unknown = sorted(set(dest.settings) - set(known))
        if unknown:
            raise ConfigError(f"{dest}: unknown setting {', '.join(unknown)}; {self.name} knows: {', '.join(known)}")
        try:
            self.timeout = float(dest.settings.get("timeout", 30))
        except ValueError:
            raise ConfigError(f"{dest}: timeout must be a number of seconds") from None
        self.dest = dest
        self.made_dirs: list[bytes] = []  # directories (below the root) created since take_made_dirs()
        self.connected = False
        self.last_used = 0.0
        # True: the caller (fc-transport) queues invalidation_paths() durably and calls invalidate() itself, so
        # the transporter must not purge on its own.
        self.defer_invalidations = False
        self.invalidate_after = 0.0  # seconds paths may wait for others to fill a batch
        self.skip_unchanged = dest.flag("skip_unchanged")  # read by _upload where the transporter can tell
        # Source roots held open by the caller for a batch (sourcefile.Roots: fc-transport's main thread, whose
        # transporter is its own); None: each upload opens its file's root afresh
        self.roots: Roots | None = None

    @classmethod
    def isolated_for(cls, dest: Destination) -> bool:
        """True: fc-transport runs each connection to ``dest`` in a worker process of its own (isolated.py), for
        transporters whose library does CPU-heavy work per packet in Python (paramiko), which one GIL would make
        share a core.  Called before the constructor: a setting it reads may still be wrong."""
        return False

    @classmethod
    def all_settings(cls) -> dict[str, str]:
        """Every setting this transporter accepts, the common ones included: what --list shows."""
        return {**COMMON_SETTINGS, **cls.settings}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dest}>"

    def __enter__(self) -> Transporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the public interface ---------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection now (operations also connect on demand, and again after a drop)."""
        if not self.connected:
            self._guard("connect", b"", self._connect)
            self.connected = True

    def check_access(self) -> None:
        """Log in and make sure the destination's root can take files, now: fc-transport and fc-conveyor call
        this at start, so that a wrong password or a read-only root is found before any event is read (an
        AuthError or PermanentError), and a server that is down (TransientError) only delays the events."""
        self.connect()
        self._guard("check", b"", self._check_root)

    def close(self) -> None:
        """Drop the connection; never raises, since it is called while handling other errors."""
        if self.connected:
            self.connected = False
            try:
                self._close()
            except Exception:
                pass

    @classmethod
    def can_skip_unchanged(cls) -> bool:
        """Whether this transporter has the ``skip_unchanged`` setting (fc-transport --skip-unchanged)."""
        return "skip_unchanged" in cls.all_settings()

    def upload(self, source: Source | bytes | str, remote_rel: bytes | str, look_first: bool = False) -> str:
        """Put the local file at ``remote_rel``, atomically, creating missing directories.  Returns UPLOADED, or
        UNCHANGED when ``skip_unchanged`` found the same content there already (nothing was sent).
        ``look_first``: look for it this once as if ``skip_unchanged`` were set (where the transporter has it):
        the upload may have been done by a process killed before it could record it.

        ``source`` is opened beneath its root and checked against what it should be (sourcefile.py; a plain path
        is trusted but for its last component); SourceMissing when it vanished, is not that file any more, or
        changed while it was sent (then it is not reported as sent: its newer event follows)."""
        rel = self.check_name(safe_rel(remote_rel))
        src = self._source_file(source)
        setting = self.skip_unchanged
        self.skip_unchanged = setting or (look_first and self.can_skip_unchanged())
        try:
            with src:
                sent = self._run("upload", rel, lambda: self._upload(src, rel))
                # _upload checks before its rename where it has one (unchanged(src, sent)): then what it published
                # is one whole version, and a change after that is the newer event's to send.  This catches the
                # rest, and transporters that publish as they write: the next event, or a retry, puts the right
                # bytes there.
                if not src.checked:
                    unchanged(src)
        finally:
            self.skip_unchanged = setting
        return UNCHANGED if sent == UNCHANGED else UPLOADED

    def _source_file(self, source: Source | bytes | str) -> SourceFile:
        """``source`` opened and checked for an upload (sourcefile.open_source), its failures as upload() says."""
        return self._opened(source, open_source)

    def refuse_own(self, root: bytes, rel: bytes) -> None:  # noqa: B027 - a hook, not abstract: most say nothing
        """PermanentError when the file ``rel`` of the source tree ``root`` lies at this destination (a folder
        inside the tree it is sent from: what is sent there comes back as new files, for ever).  Only a
        destination that is a local folder can tell (file://): the others say nothing."""

    def _opened(self, source: Source | bytes | str, opener: Callable[[Source, Roots | None], F]) -> F:
        """``source`` opened by ``opener`` (open_source, open_source_fd), its failures as upload() says."""
        if not isinstance(source, Source):
            source = Source.plain(source)
        try:
            return opener(source, self.roots)
        except SourceGone as exc:
            raise SourceMissing(str(exc)) from None
        except SourceRefused as exc:
            raise PermanentError(str(exc)) from None
        except OSError as exc:
            raise PermanentError(f"cannot read {os.fsdecode(source.path)}: {exc.strerror}") from None

    def delete(self, remote_rel: bytes | str) -> None:
        """Remove ``remote_rel``; one that is already gone counts as deleted."""
        rel = self.check_name(safe_rel(remote_rel))
        self._run("delete", rel, lambda: self._delete(rel))

    def stat(self, remote_rel: bytes | str) -> RemoteStat | None:
        """Size (and mtime when known) of ``remote_rel``, or None when there is no such file."""
        rel = self.check_name(safe_rel(remote_rel))
        return self._run("stat", rel, lambda: self._stat(rel))

    def take_made_dirs(self) -> list[bytes]:
        """The directories (relative to the root) this transporter created since the last call: fc-transport
        keeps them, and removes one (remove_dir) once the last file in it is deleted."""
        made, self.made_dirs = self.made_dirs, []
        return made

    def remove_dir(self, remote_rel: bytes | str) -> bool:
        """Remove directory ``remote_rel`` if it is empty (never the root); whether it is gone now.  Only where
        the protocol has directories (``has_dirs``)."""
        rel = safe_rel(remote_rel)
        return bool(self._run("remove directory", rel, lambda: self._rmdir(rel)))

    def url(self, remote_rel: bytes | str) -> str:
        """The public URL of ``remote_rel``: the base URL plus the percent-encoded path."""
        rel = safe_rel(remote_rel)
        if _URL_SAFE(rel) is not None:  # most names: nothing to percent-encode (what quote gives back then)
            return self.dest.base_url + rel.decode("ascii")
        return self.dest.base_url + quote(rel, safe="/")

    def invalidation_paths(self, remote_rel: bytes | str) -> list[str]:
        """CDN paths to purge now that ``remote_rel`` changed or went away (none: no CDN in front)."""
        return []

    def invalidate(self, paths: list[str]) -> None:
        """Purge ``paths`` (at most ``invalidation_batch``) on the CDN, in one request."""
        return None  # no CDN: nothing to purge (cf overrides this)

    # -- for subclasses -------------------------------------------------------------------------

    def check_name(self, rel: bytes) -> bytes:
        """Refuse (PermanentError) names the protocol cannot carry faithfully; the default carries all."""
        return rel

    def classify(self, exc: BaseException) -> FCError:
        """The TransientError or PermanentError that ``exc`` means.  Subclasses handle their library's first."""
        if isinstance(exc, FCError):
            return exc
        text = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):  # socket.timeout too: an alias of it since Python 3.10
            return TransientError(f"timed out after {self.timeout:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return TransientError(f"connection refused by {self.dest.host}:{self.dest.port or 'default port'}")
        if isinstance(exc, (EOFError, ConnectionError)):
            return TransientError(f"connection lost: {text}")
        # gaierror comes only from socket, imported by whatever connects: a local copy does not load it at all
        socket = sys.modules.get("socket")
        if socket is not None and isinstance(exc, socket.gaierror):
            return TransientError(f"cannot resolve {self.dest.host}: {exc.strerror}")
        if isinstance(exc, PermissionError):
            return PermanentError(f"permission denied: {text}")
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return TransientError(text)
        return PermanentError(text)

    def _rmdir(self, rel: bytes) -> bool:
        """remove_dir's work: False when the directory is not empty (or not a directory)."""
        return False

    def _check_root(self) -> None:
        """check_access's look at the root, after the login: where the protocol can say it, that files can be
        written there (a missing root is created, as the first upload would).  The default: the login is all."""
        return None

    def _alive(self) -> bool:
        """Whether the open connection still works; asked before reusing one idle for IDLE_CHECK seconds."""
        return True

    @abc.abstractmethod
    def _connect(self) -> None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    @abc.abstractmethod
    def _upload(self, src: BinaryIO, rel: bytes) -> str | None: ...

    @abc.abstractmethod
    def _delete(self, rel: bytes) -> None: ...

    @abc.abstractmethod
    def _stat(self, rel: bytes) -> RemoteStat | None: ...

    # -- internals ------------------------------------------------------------------------------

    def _run(self, what: str, rel: bytes, op: Callable[[], R]) -> R:
        # Servers drop idle connections (FTP's 421 after a few minutes): look before reusing an idle one,
        # rather than fail an upload half-way or repeat one that may have partly happened.
        if self.connected and time.monotonic() - self.last_used > IDLE_CHECK and not self._alive():
            self.close()
        self.connect()
        try:
            return self._guard(what, rel, op)
        finally:
            self.last_used = time.monotonic()

    def _guard(self, what: str, rel: bytes, op: Callable[[], R]) -> R:
        try:
            return op()
        except Exception as exc:
            err = self.classify(exc)
            if isinstance(err, (TransientError, AuthError)):
                self.close()  # the connection is suspect: the next operation opens a fresh one
            if str(err).startswith(f"{self.dest}:"):
                raise err from (None if err is exc else exc)
            # One message shape everywhere: "sftp://host/root: upload 'a/b.css': permission denied".
            where = f"{what} {os.fsdecode(rel)!r}" if rel else what
            raise type(err)(f"{self.dest}: {where}: {err}") from exc
