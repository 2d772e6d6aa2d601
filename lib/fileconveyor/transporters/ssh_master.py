"""One SSH login shared by the SFTP sessions of a destination: an OpenSSH master (``ssh -M -N``) per ssh command line.

Why: every OpenSSH login costs about 0.1 s of client CPU and 0.15 s of sshd's (the post-quantum key exchange,
the key check), and fc-transport opens ``connections`` sessions (4 by default) per destination.  Over a master, a
session is one more channel on a connection already logged in: its ``ssh -o ControlPath=...`` starts in a few ms
and hands its stdin and stdout to the master, so the file's bytes go through one ssh, not two.

What keeps it safe:
- one master per distinct ssh command line: the socket's name is a hash of the whole argv (key file, known_hosts,
  options, user, host, port), not ssh's ``%C`` (user, host and port only): two destinations with different keys,
  hence perhaps different ``authorized_keys`` restrictions, never share a login;
- the socket lies in a private directory (``control_dir``: ours, 0700, a real directory, not a link): nobody else
  can connect to our login, nor plant a socket where we look for ours; no such directory: no sharing;
- the master is a process of its own, not one of the sessions: no session's error or close takes it down.  It
  ends when the last transporter using it closes (``ssh -O exit``), or, when fc-transport was killed, PERSIST
  seconds after its last session ended (``ControlPersist``);
- a dead master (killed, the server gone) takes its sessions with it: their uploads fail as transient errors (the
  files stay queued, temporary names are never published), and the next connection finds its socket dead and
  starts a new master.  A master that cannot start for a reason other than the login itself leaves the sessions
  logging in one by one, as before, for RETRY_AFTER seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..errors import FCError
from .base import TransientError
from .sftp_openssh import option_value

PERSIST = 10  # seconds a master outlives its last session when nobody ends it (fc-transport killed -9)
# Sessions per master: OpenSSH's sshd allows 10 per connection by default (MaxSessions); beyond, a session logs
# in by itself (ssh would do that too, after the master's refusal: one round trip for nothing).
MAX_SESSIONS = 8
SAME_ANSWER = 1.0  # seconds a failed login's error answers the connections asking, instead of a new login
RETRY_AFTER = 60.0  # seconds sessions log in on their own after a master failed for an unknown reason
# ssh binds "<ControlPath>.<16 random characters>" first, and sun_path holds 107 bytes and a NUL.
MAX_PATH = 107 - 17
STOP_WAIT = 5.0

Explain = Callable[[str, int], "FCError | None"]  # (ssh's messages, exit status) -> the error they name, if any


def private_dir(base: str) -> str | None:
    """``base/fc-ssh-<uid>``, made 0700 if missing; None unless it is then a real directory (not a link), ours,
    that nobody else may enter (a directory another user made first at that name is not used)."""
    uid = os.geteuid()
    path = os.path.join(base, f"fc-ssh-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        return None
    return path


_dir: tuple[int, str | None] | None = None  # (pid, the control directory) once looked for


def control_dir() -> str | None:
    """Where this process's control sockets go: the first usable of $XDG_RUNTIME_DIR (per user, cleared at
    logout), the temporary directory, /tmp; None when none is private or short enough for a socket's name."""
    global _dir
    if _dir is not None and _dir[0] == os.getpid():
        return _dir[1]
    found = None
    for base in (os.environ.get("XDG_RUNTIME_DIR", ""), tempfile.gettempdir(), "/tmp"):
        if not os.path.isabs(base) or len(os.fsencode(base)) > MAX_PATH - 48:
            continue
        found = private_dir(base)
        if found:
            break
    _dir = (os.getpid(), found)
    return found


def listening(path: str) -> bool:
    """Whether a master answers at ``path`` (a killed one leaves its socket behind, refusing connections)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class Master:
    """The shared login of one ssh command line (``options``, without the host), for the sessions that join it."""

    def __init__(self, options: Sequence[str], host: str, path: str):
        self.options, self.host, self.path = list(options), host, path
        self.lock = threading.Lock()
        self.sessions = 0  # joined and not left
        self.started = False  # by this process, and not yet told to exit
        self.alone_until = 0.0  # monotonic time until which sessions log in on their own
        self.failed: tuple[float, FCError] | None = None  # when the last start failed, and why

    def session_options(self) -> list[str]:
        return ["-o", "ControlMaster=no", "-o", f"ControlPath={option_value(self.path)}"]

    def join(self, timeout: float, explain: Explain) -> bool:
        """Count one more session on this login, starting the master if none answers; False: log in alone
        (too many sessions, or the master could not start for a reason of its own).  Raises the login's error
        (refused key, host key, server down) as a direct login would have, once for every thread waiting on it."""
        asked = time.monotonic()
        with self.lock:
            # Failed while we waited, or just now: the same answer, not one more login the server refuses.
            if self.failed is not None and (self.failed[0] >= asked or time.monotonic() - self.failed[0] < SAME_ANSWER):
                err = self.failed[1]
                raise type(err)(str(err))
            if self.sessions >= MAX_SESSIONS or time.monotonic() < self.alone_until:
                return False
            if not listening(self.path) and not self._start(timeout, explain):
                return False
            self.sessions += 1
            return True

    def log_in_alone(self) -> None:
        """A session failed over this login where one of its own worked: the next ones log in on their own for
        RETRY_AFTER seconds."""
        with self.lock:
            self.alone_until = time.monotonic() + RETRY_AFTER

    def leave(self) -> None:
        """One session over it ended; the last one ends the master."""
        with self.lock:
            self.sessions -= 1
            if self.sessions <= 0:
                self.sessions = 0
                self.stop()

    def _start(self, timeout: float, explain: Explain) -> bool:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a killed master's socket: ssh will not bind over it
        control = ["-o", f"ControlPersist={PERSIST}", "-o", f"ControlPath={option_value(self.path)}"]
        argv = [*self.options, "-M", "-N", *control, "--", self.host]
        # -N: no session of its own.  With ControlPersist, ssh forks into the background once logged in and
        # listening, and the process started here exits 0: the master is up when run() returns.
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                start_new_session=True,  # a Ctrl-C to fc-transport's group ends it through us, not under a session
            )
        except subprocess.TimeoutExpired:
            self._fail(TransientError(f"timed out logging in to {self.host} (no answer within {timeout:g} s)"))
        except OSError as exc:
            self._fail(TransientError(f"cannot run ssh: {exc}"))
        text = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 0 and listening(self.path):
            self.started, self.failed = True, None
            return True
        err = explain(text, proc.returncode)
        if err is not None:
            self._fail(err)
        self.alone_until = time.monotonic() + RETRY_AFTER  # something of the master's own: log in alone a while
        return False

    def _fail(self, err: FCError) -> NoReturn:
        self.failed = (time.monotonic(), err)
        raise err

    def stop(self) -> None:
        """Tell the master to exit (its sessions end with it); nothing when none of ours answers there."""
        if not self.started:
            return
        self.started = False
        if not listening(self.path):
            return
        control = f"ControlPath={option_value(self.path)}"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [self.options[0], "-F", "none", "-o", control, "-O", "exit", "--", self.host],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=STOP_WAIT,
                start_new_session=True,
            )


_masters: dict[str, Master] = {}
_owner = os.getpid()
_lock = threading.Lock()


def master_for(options: Sequence[str], host: str) -> Master | None:
    """The master for sessions run as ``options`` + host (made, not started), or None when sockets have no
    private place here."""
    global _owner
    where = control_dir()
    if where is None:
        return None
    digest = hashlib.sha256("\0".join([*options, "--", host]).encode("utf-8", "surrogateescape")).hexdigest()
    path = os.path.join(where, f"{os.getpid()}-{digest[:20]}")
    if len(os.fsencode(path)) > MAX_PATH:
        return None
    with _lock:
        if _owner != os.getpid():  # a forked child: the parent's masters are the parent's to end
            _masters.clear()
            _owner = os.getpid()
        master = _masters.get(path)
        if master is None:
            master = _masters[path] = Master(options, host, path)
        return master


@atexit.register
def _stop_all() -> None:
    """At exit, end the masters still up (sessions of transporters nobody closed): not PERSIST seconds later."""
    if _owner != os.getpid():
        return
    with _lock:
        masters = list(_masters.values())
    for master in masters:
        master.stop()
