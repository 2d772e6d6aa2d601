"""A transporter whose connection lives in a worker process of its own.

Why: paramiko encrypts, frames and acknowledges every 32 KB SSH packet in Python.  fc-transport's connections
are threads of one process, so with the GIL all of them together got one core: measured on 2 cores, 20 MB files
over 4 SFTP connections went at 0.7x rclone's speed, the client using one core and the second half idle.  A
transporter whose ``isolated_for(destination)`` says so instead gets one worker process per connection, each with its
own interpreter; the stage's threads just hand it (method, arguments) over a socket and wait for the answer.

``isolated(cls)`` makes a subclass of ``cls`` whose transfer operations (``connect``, ``upload``, ``delete``,
``stat``, ``invalidate``) run in the worker; everything computed without the server (``url``,
``invalidation_paths``, ``check_name``, class settings) stays in-process, from ``cls`` itself.  Errors come back
as the same TransientError/PermanentError/AuthError the transporter raised.  A worker that dies (killed, out of
memory) is a TransientError: the operation is retried with a fresh worker, so it is never lost.  Workers run in a
session of their own and ignore SIGINT (the stage decides when to stop), and die with fc-transport, even when it
is killed with -9.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ..children import end
from ..errors import FCError
from ..report import get_logger
from ..sourcefile import Source
from .base import CLOSE_WAIT, RemoteStat, TransientError, Transporter
from .destination import Destination

_LIB = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds fileconveyor/
STOP_WAIT = 5.0  # seconds a worker gets to close its connection and exit before it is killed


class _Worker:
    """The parent's side of one worker process."""

    def __init__(self, cls: type[Transporter], dest: Destination, defer: bool):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    # sys.path[0] is the current directory for -c: replaced, so that no module lying there
                    # (a paramiko.py in a shared upload directory) runs in the worker.
                    # SIGINT ignored first: a Ctrl-C while the worker imports is the stage's to handle too.
                    f"import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path[0] = {_LIB!r}; "
                    "from fileconveyor.transporters.isolated import main; main()",
                    str(theirs.fileno()),
                    str(os.getpid()),
                    str(get_logger("fileconveyor").getEffectiveLevel()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # A session of its own: Ctrl-C at the terminal reaches the stage, which decides, and never a
                # worker still starting (before it could ignore SIGINT, it died with a traceback).
                start_new_session=True,
            )
            self.conn = Connection(os.dup(ours.fileno()))
        # The class goes by reference (module and name): the worker imports it, as the stage did.
        self.conn.send((cls, dest, defer))

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        self.conn.send((method, args))
        ok, value = self.conn.recv()
        if ok:
            return value
        raise value

    def stop(self) -> None:
        self.conn.close()  # the worker sees the end of its input, closes its connection, exits
        end(self.proc, STOP_WAIT)


class IsolatedTransporter(Transporter):
    """Mixed in before a transporter class by ``isolated()``: see the module's doc."""

    _real: type[Transporter]  # the class the worker runs

    def __init__(self, dest: Destination):
        super().__init__(dest)  # the settings are checked here, before any worker starts
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._worker is None:
                self._worker = _Worker(self._real, self.dest, self.defer_invalidations)
            worker = self._worker
            try:
                return worker.call(method, args)
            except FCError:
                raise
            except BaseException as exc:
                # Dead, or interrupted between a request and its answer: the next answer could be this one's,
                # so this worker is not used again.
                self._worker = None
                worker.stop()
                if isinstance(exc, (EOFError, OSError, pickle.PickleError)):
                    code = worker.proc.returncode
                    raise TransientError(
                        f"{self.dest}: {method}: the {self.name} worker process ended (exit status {code})"
                    ) from exc
                raise

    def connect(self) -> None:
        self._call("connect")

    def check_access(self) -> None:
        self._call("check_access")

    def take_made_dirs(self) -> list[bytes]:
        made: list[bytes] = self._call("take_made_dirs")
        return made

    def remove_dir(self, remote_rel: bytes | str) -> bool:
        return bool(self._call("remove_dir", remote_rel))

    def upload(self, source: Source | bytes | str, remote_rel: bytes | str, look_first: bool = False) -> str:
        # A Source is plain data: the worker opens and checks the file itself, the same way (sourcefile.py)
        return str(self._call("upload", source, remote_rel, look_first))

    def delete(self, remote_rel: bytes | str) -> None:
        self._call("delete", remote_rel)

    def stat(self, remote_rel: bytes | str) -> RemoteStat | None:
        result: RemoteStat | None = self._call("stat", remote_rel)
        return result

    def invalidate(self, paths: list[str]) -> None:
        self._call("invalidate", paths)

    def close(self) -> None:
        # A call in progress holds the lock: give it a moment, then end its worker (the call fails as
        # transient and its file stays queued), so that stopping fc-transport never waits for a whole upload.
        if not self._lock.acquire(timeout=CLOSE_WAIT):
            worker = self._worker
            if worker is not None:
                worker.proc.kill()
            self._lock.acquire()
        try:
            worker, self._worker = self._worker, None
        finally:
            self._lock.release()
        if worker is not None:
            worker.stop()


@functools.cache
def isolated(cls: type[Transporter]) -> type[Transporter]:
    """``cls`` with its connection in a worker process (see the module's doc)."""
    return type(f"Isolated{cls.__name__}", (IsolatedTransporter, cls), {"_real": cls})


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def main() -> None:
    """The worker: run the requests that come in on the socket with one transporter, until the socket closes."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    # paramiko imports invoke, when installed, only for "Match exec" in ssh_config files, which File Conveyor
    # never reads: a tenth of a second of every worker's start-up, times the connections.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the stage decides
    from ..report import Reporter, route_logging, verbosity_of

    # Library warnings (trusting an unknown host key) read like the stage's own, at the stage's verbosity.
    route_logging(Reporter("fc-transport", sys.stderr, verbosity_of(int(sys.argv[3]))))
    # Die with fc-transport, even by kill -9, even in the middle of an upload.  Not PR_SET_PDEATHSIG: that
    # fires when the *thread* that started the worker ends, which is not fc-transport ending.
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    conn = Connection(fd)
    try:
        cls, dest, defer = conn.recv()
    except EOFError:
        return
    tp: Transporter = cls(dest)
    tp.defer_invalidations = defer
    try:
        while True:
            try:
                method, args = conn.recv()
            except EOFError:
                return
            try:
                reply: tuple[bool, Any] = (True, getattr(tp, method)(*args))
            except FCError as exc:
                exc.__cause__ = exc.__context__ = None  # the library's exception may not pickle; the text says it
                exc.__traceback__ = None
                reply = (False, exc)
            except Exception as exc:  # a bug: the stage reports it as such (FCError's exit status is FATAL)
                traceback.print_exc()
                reply = (False, FCError(f"{tp.dest}: {method}: {type(exc).__name__}: {exc}"))
            conn.send(reply)
    finally:
        tp.close()
