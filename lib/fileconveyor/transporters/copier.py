"""A copier process: small copies into a local folder done on another core, from descriptors fc-transport opened.

fc-transport copies small files to a ``file://`` destination in its main thread (stages/transport/turns.py), and
the kernel's part of a copy (the temporary name, sendfile, the rename) is most of its CPU time.  Threads cannot
run that beside the main thread's Python (docs/benchmarks.md, "small copies beside the main thread"); a process
can, if it costs about what it saves.  So the copier is lean: every check stays in fc-transport
(SymlinkOrCopy.prepare: the source opened beneath its root and checked, the destination's directory opened beneath
the destination's root without following links), which hands over the open descriptors (SCM_RIGHTS, in batches)
and closes its own; the copier (copier_child.py, a Python that imports only ``os`` and ``socket``) creates the
temporary name in the directory it was given, copies, checks the source did not change, renames, and answers one
status per file.  It cannot reach anything fc-transport did not open for it.

A copier that dies or answers garbage is ``dead``: its unanswered files are copied again by the caller (a copy
done twice writes the same bytes under the same name), and no copier is started again in that run.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
from pathlib import Path

from .local import Prepared

CHILD = str(Path(__file__).with_name("copier_child.py"))
MAX_FDS = 250  # descriptors per message (the kernel's SCM_MAX_FD is 253)
CHANGED = -1  # a status: the source changed while it was copied


class CopierProcess:
    """The copier, and the batch being filled for it."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # -I -S: nothing from the environment or site-packages; the parent's pid: it dies with us (prctl).
            # Not our stdout: the next stage sees the end of our output when we let go of it (Sending.close_early,
            # release), and a copier holding it too kept that end back until the copier stopped, at our close:
            # the next stage then acknowledged only after its input had been quiet for a while, 0.1-0.2 s later.
            self.proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-I", "-S", CHILD, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Not in our process group: Ctrl-C at a terminal signals the whole foreground group, and the copier,
                # a plain python, died of it with a KeyboardInterrupt traceback on the user's terminal while we
                # stopped cleanly (exit 130).  We end it ourselves; prctl and the socket's end cover our death.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock = mine
        self.fields: list[bytes] = []
        self.srcs: list[Prepared] = []
        self.dirs: dict[int, int] = {}  # the transporter's directory descriptor -> its index in the batch
        self.dups: list[int] = []  # duplicates of those: the transporter may close its own before the batch goes
        self.batches: collections.deque[int] = collections.deque()  # files per batch sent, not answered yet
        self.unanswered = 0
        self.dead = False

    def add(self, prep: Prepared, batch: int) -> bool:
        """One file for the batch; whether the batch is full now (``batch`` files, or as many descriptors as a
        message takes), for ``send`` to hand it over."""
        i = self.dirs.get(prep.dir_fd)
        if i is None:
            i = self.dirs[prep.dir_fd] = len(self.dups)
            self.dups.append(os.dup(prep.dir_fd))
        b = prep.src.before
        self.fields += (b"%d" % i, b"%d" % b.st_size, b"%d" % b.st_mtime_ns, prep.tmp, prep.name)
        srcs = self.srcs
        srcs.append(prep)
        return len(srcs) >= batch or len(srcs) + len(self.dups) >= MAX_FDS

    def send(self) -> None:
        """The batch to the copier; our descriptors closed either way.  A copier gone: ``dead``."""
        srcs, dups = self.srcs, self.dups
        if not srcs:
            return
        try:
            if not self.dead:
                msg = b"\0".join((b"%d" % len(dups), *self.fields))
                socket.send_fds(self.sock, [msg], dups + [p.src.fileno() for p in srcs])
                self.batches.append(len(srcs))
                self.unanswered += len(srcs)
        except OSError:
            self.dead = True
        finally:
            self._drop_unsent()  # (sent: the copier has its own copies of the descriptors now)

    def _drop_unsent(self) -> None:
        """The batch being filled, our descriptors of it closed: once sent, or when it never will be (the copier
        stopped or dead; left to the garbage collector, the duplicated directory descriptors, plain ints, stayed
        open to the end of the process; its files' items are copied again by the caller, from the source opened
        anew)."""
        srcs, dups = self.srcs, self.dups
        self.srcs, self.dups, self.fields, self.dirs = [], [], [], {}
        for fd in dups:
            os.close(fd)
        for p in srcs:
            p.src.close()

    def answer(self, block: bool) -> list[int] | None:
        """The statuses of the oldest batch sent (0, an errno, CHANGED), None when it has not come (``block``:
        waited for) or the copier is dead."""
        if self.dead or not self.batches:
            return None
        try:
            data = self.sock.recv(1 << 16, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        n = self.batches[0]
        try:
            statuses = [int(s) for s in data.split(b" ")] if data else []
        except ValueError:
            statuses = []
        if len(statuses) != n:  # an end of file, or garbage
            self.dead = True
            return None
        self.batches.popleft()
        self.unanswered -= n
        return statuses

    def stop(self) -> None:
        """Close the socket and reap the copier.  One that answered every batch has nothing of ours in hand (it
        waits in its recv): it is killed, not waited for while it ends at its end of file (the interpreter's
        teardown: 8-10 ms at the end of every fc-transport run, on the critical path of a pipeline; an unused one
        may still be starting up).  One with batches unanswered ends after the batch in hand."""
        idle = not self.batches
        self.dead = True
        self.sock.close()
        self._drop_unsent()
        proc, self.proc = self.proc, None
        if proc is not None:
            if idle:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
