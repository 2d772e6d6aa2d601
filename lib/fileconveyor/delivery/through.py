"""End-to-end ("through") acknowledgements: how far a writer's lines are done by us *and* every stage after us.

A reader's acknowledgement (``seq``, delivery/durable.py) says what it holds safely in its own state file: the
writer may forget those lines, since the reader re-sends what it made of them after a restart.  That is enough on
one machine.  A worker of the broker hop (docs/scale-out.md) may be lost for good, its state files with it; then
what its later stages still held is gone while the broker counts it done.  So each acknowledgement also carries
``through``: the highest seq of the writer such that every line up to it is done here, and every line we made of
them is acknowledged-through by each of our own readers.  fc-consume acknowledges a message to the broker only
once its line is through (stages/consume/stage.py).  A stage with no File Conveyor reader acknowledging it (the
last stage; output into a terminal, a file, jq) is the end of the chain: its through is its mark.

What we made of the lines up to a mark is found without bookkeeping per line: when we acknowledge a mark M to a
writer, every line up to M is done and committed, so its outputs are in our outbox at or below our highest seq
so far (H).  Each (M, H) is a step; once our readers are through H, M is through.  H may cover outputs of later
lines as well (fc-transport finishes out of order; a filtered line makes none): through then waits a little
longer, never less.  Nothing of this is stored: after a restart the first step is the stored mark with our
highest seq then, and until it is through the writer's row keeps what our previous process had said.

Which stage is the last is learnt, not told: a reader says it is one by acknowledging.  A brand-new reader has not
yet (it is still starting, or has not read its first line), so a stage that has made output but has no reader row
waits FIRST_READER_WAIT before it takes itself for the end of the chain: lost with the whole host in that time, the
lines are delivered again by the broker instead of being counted done.  A stage writing into a pipe read by jq is
the end of the chain after that wait; one writing into no pipe or FIFO (a file, /dev/null, a terminal: no File
Conveyor stage reads it as it is written) or that made no output (every line filtered out) at once.
"""

from __future__ import annotations

import array
import fcntl
import os
import termios
import time
from collections import deque
from collections.abc import Callable

from . import ack_check
from .durable import StageState

# seconds a stage whose lines go into a pipe or FIFO, with output and no reader row, waits for a reader to say it
# is one: longer than fc-tee's --first-wait (30 s), during which a reader behind it gets no line to register on
# (fc-filter | fc-tee a b with b's reader missing: at 10 s fc-filter said all its lines were through while the
# stage reading a had none of them yet)
FIRST_READER_WAIT = 40.0
# ... but once what we wrote has been read out of the pipe and nobody said it is a reader for this long, what
# reads us is no File Conveyor stage (jq, a log pipe of supervisord, a script): one registers on its first line
# (fc-tee reads nothing before its outputs are open, so behind it our lines stay in the pipe and the long wait holds).
# Not when a File Conveyor stage is on the shell pipeline after us behind a pass-through (tee, grep, pv): that
# one read our lines at once, and they wait in its output pipe while the stage starts (_stage_after)
QUICK_READER_WAIT = 5.0


class Through:
    """Per writer: the steps (our mark for it, our highest output seq then) not yet through our readers."""

    def __init__(self, state: StageState, clock: Callable[[], float] = time.monotonic):
        self.state = state
        self.clock = clock
        self.alone_since: float | None = None  # when we first had output and no reader row
        self._out_fd: int | None = None  # our descriptor of state.out (found once; -1: none)
        self._stage_after: bool | None = None  # a stage on the shell pipeline after us (looked at once)
        self.steps: dict[str, deque[list[int]]] = {}
        self.epochs: dict[str, str] = {}
        self.done: dict[str, int] = {}  # through, as known in this process

    def compute(self, marks: dict[str, tuple[str, int]]) -> dict[str, int | None]:
        """The through of each writer in ``marks`` (what we acknowledge it now); None: not known yet."""
        if not marks:
            return {}
        below = self.state.throughs()
        high = self.state.next_seq - 1
        limit = min(below.values()) if below else self._alone(high)  # None: we are the last stage
        out: dict[str, int | None] = {}
        for origin, (epoch, mark) in marks.items():
            if self.epochs.get(origin) != epoch:  # a writer new to us, or its state made anew
                self.epochs[origin] = epoch
                self.steps[origin] = deque()
                self.done.pop(origin, None)
            steps = self.steps[origin]
            while steps and steps[-1][0] > mark:  # our mark went back (a replay asked for): those are not done
                steps.pop()
            if limit is None:
                steps.clear()
                self.done[origin] = mark
            else:
                if not steps or steps[-1][0] < mark:
                    if steps and steps[-1][1] == high:
                        steps[-1][0] = mark  # nothing new made since: the same step goes further
                    else:
                        steps.append([mark, high])
                while steps and steps[0][1] <= limit:
                    self.done[origin] = max(self.done.get(origin, 0), steps.popleft()[0])
            out[origin] = self.done.get(origin)
        return out

    def _alone(self, high: int) -> int | None:
        """With no reader row: 0 (nothing we made is through) while a reader may still be starting, else None."""
        if high <= 0:
            return None  # we made nothing: nothing to wait for
        if self.state.out is None:
            return None  # our lines go into no pipe or FIFO (a file, /dev/null, a terminal): no reader is starting
        now = self.clock()
        if self.alone_since is None:
            self.alone_since = now
        waited = now - self.alone_since
        if waited >= FIRST_READER_WAIT or (waited >= QUICK_READER_WAIT and self._unread() == 0 and not self._staged()):
            return None
        return 0

    def _staged(self) -> bool:
        """Whether a File Conveyor stage is on the shell pipeline after us (``a | tee log | fc-transport``): the
        pass-through read our pipe empty at once, and a stage slow to start (loading, connecting) said nothing in
        QUICK_READER_WAIT; taken for the end of the chain, we said our lines were through (fc-consume acknowledged
        them to the broker) while they sat unread before that stage."""
        if self._stage_after is None:
            self._stage_after = self.state.out is not None and any(
                _is_stage(pid) for pid in ack_check.pipeline_after(self.state.out)
            )
        return self._stage_after

    def _unread(self) -> int | None:
        """Bytes written into our output pipe that nobody has read yet; None: not known (taken as some)."""
        if self._out_fd is None:
            self._out_fd = _fd_of(self.state.out)
        if self._out_fd < 0:
            return None
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self._out_fd, termios.FIONREAD, buf, True)
        except OSError:
            return None
        return buf[0]


def _is_stage(pid: int) -> bool:
    """Whether process ``pid`` runs a File Conveyor command (bin/fc-*, or python -m fileconveyor...)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(4096).split(b"\0")[:3]
    except OSError:
        return False
    return any(os.path.basename(a).startswith(b"fc-") or a.startswith(b"fileconveyor.") for a in argv)


def _fd_of(ident: tuple[int, int] | None) -> int:
    """Our descriptor of the pipe or FIFO ``ident`` (-1: none): stdout, or the FIFO --output opened."""
    if ident is None:
        return -1
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = [1]  # no /proc (macOS): stdout
    for fd in fds:
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            return fd
    return -1
