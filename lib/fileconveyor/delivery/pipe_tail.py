"""What the reader of our stdout pipe has taken, when no File Conveyor stage says so.

A File Conveyor reader acknowledges what it holds (delivery/durable.py), and its
acknowledgements decide what a writer re-sends.  Any other reader (jq, head, a
terminal pager, or a File Conveyor stage that failed before it read its first
line: a typo in its flags) says nothing, and "written into the pipe" is not
"taken": a pipe buffer holds 64 KiB (``PIPE_SIZE`` once grown) that the reader may never read.  So, for a
writer whose stdout is a pipe (docs/durability.md, "A reader that is not a File
Conveyor stage"):

- a line counts as delivered once the reader has **read** it from the pipe: the
  bytes still unread (``FIONREAD`` on the write end, Linux) are the last lines
  written, and they are not;
- a reader that **closes the pipe before the end of our output** (head after its
  lines, a stage that failed before or while reading, a crash) took nothing of
  this run for sure: the writer counts none of this run's lines as delivered,
  and the next run sends them again;
- at the end of its output the writer waits for the reader to read what is left
  (``settle``), and a moment more to see whether it quits before the end;
- a reader that is a File Conveyor pass-through stage (fc-filter, fc-tee: no state
  file, lines passed on as they came) into a pipe reads everything at once and tells
  nothing of what the process after it did: `fc-watch | fc-filter | fc-transport --typo` lost
  the run's lines, fc-filter having read them all.  Its reading is no delivery:
  none of this run's lines count as delivered, and what the stage after it does
  not acknowledge goes again (``behind_pass_through``, looked at once, on our first
  write).

A terminal, a regular file, or a platform without FIONREAD: written is delivered,
as before (``active`` is False).  A regular file says itself how far it got
(``written_in_file``): a process of ours killed after appending lines and before
recording them as written would otherwise have them appended again.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import select
import stat
import time
from collections.abc import Callable

from . import ack_check

try:
    from termios import FIONREAD
except ImportError:  # not a Unix: no pipe tail
    FIONREAD = None  # type: ignore[assignment]

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032  # Linux
# What a stage's output pipe is grown to hold (best effort): a round's lines (fc-transport's 512-575 lines of about
# 600 bytes).  With the default 64 KiB, a stage writing its round blocked until its reader had read all but the last
# 64 KiB: fc-transport, the pipeline's busiest stage, waited for fc-record that way 1-7 ms a round, and 150-300 ms
# a run on a loaded machine.  Not more: a user's pipes share pipe-user-pages-soft (64 MiB), past which new pipes get
# one page (ssh's pipes take 1 MiB each: transporters/sftp_openssh.py).
PIPE_SIZE = 512 * 1024
GRACE = 0.2  # seconds after our last write a reader that has read everything gets to show it quits (head)
# settle looks again after POLL_MS, doubled up to POLL_MAX_MS: a File Conveyor reader registers within
# milliseconds of reading our first line (at our end with a fresh pipeline), and it was waited for 25 ms on average.
# For the first FAST_FOR seconds at most every POLL_FAST_MAX_MS: the stage after us may still be starting (its
# imports, its state file) when our lines are written, and it registers a few ms after that; a 50 ms look put up to
# 50 ms on the end of a short run (fc-watch --scan-once of a few files: the next stage sees our end only after it).
POLL_MS, POLL_FAST_MAX_MS, POLL_MAX_MS, FAST_FOR = 5, 10, 50, 1.0
STOP_WAIT = 2.0  # seconds a stop request (SIGTERM, Ctrl-C) still leaves the reader to read what is in the pipe


class PipeTail:
    """The lines (seq and size) written into a pipe lately, and how many of their bytes are still unread."""

    def __init__(self, fd: int | None):
        self.fd = fd if fd is not None and _is_pipe(fd) and unread(fd) is not None else None
        self.quit_early = False  # the reader closed the pipe before the end of our output
        self._lines: list[tuple[int, int]] = []  # (seq, size) of the last lines written, oldest first
        self._bytes = 0
        self._last_write = 0.0
        self._keep = 1 << 20
        self._left: int | None = None  # bytes unread when we let go of the pipe (detach)
        self.pass_through: bool | None = None  # our reader is fc-filter or fc-tee (None: not looked yet)
        if self.fd is not None:
            try:  # lines further back than a full pipe were read for sure: no need to keep them
                self._keep = max(fcntl.fcntl(self.fd, F_GETPIPE_SZ), 4096)
                if self._keep < PIPE_SIZE:
                    self._keep = fcntl.fcntl(self.fd, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the pipe as it is, and its size kept

    @property
    def active(self) -> bool:
        return self.fd is not None

    def wrote(self, seqs: list[int], sizes: list[int]) -> None:
        """Lines just written (whole), in order."""
        if self.fd is None:
            return
        if self.pass_through is None:
            self.pass_through = behind_pass_through(self.fd)
        self._last_write = time.monotonic()
        lines = self._lines
        lines.extend(zip(seqs, sizes, strict=True))
        self._bytes += sum(sizes)
        keep = self._keep
        if len(lines) > 1 and self._bytes - lines[0][1] >= keep:
            # the oldest lines go while those after them still hold a full pipe: found from the newest end (a
            # pipe's worth of lines, not the thousands of a round), and cut off at once
            held, i = 0, len(lines) - 1
            while i > 0 and held + lines[i][1] < keep:
                held += lines[i][1]
                i -= 1
            self._bytes = held + lines[i][1]
            del lines[:i]

    def delivered(self, last: int, run_start: int) -> int:
        """How far lines count as taken: ``last`` (the last written) when not a pipe, what the reader has read
        of it, or, when the reader left before our end, nothing after ``run_start``."""
        if self.quit_early or self.pass_through:
            return min(run_start, last)
        if self.fd is None and self._left is None:
            return last
        return self.read_upto(last)

    def detach(self) -> None:
        """We close our end of the pipe before our exit (sending.Sending.close_early): what was unread then is
        counted as unread from now on (its reader may read it later: a lower ``delivered``, a replay at worst)."""
        if self.fd is not None:
            self._left = unread(self.fd)
            self.fd = None

    def read_upto(self, last: int) -> int:
        """The seq of the last line the reader has read whole; ``last`` when it has read all (or we cannot tell)."""
        left = unread(self.fd) if self.fd is not None else self._left
        if not left:
            return last
        seen = 0
        lines = self._lines
        for i in range(len(lines) - 1, -1, -1):
            seen += lines[i][1]
            if seen >= left:  # line i is (partly) unread: the one before it is the last read whole
                return lines[i - 1][0] if i > 0 else lines[i][0] - 1
        return lines[0][0] - 1 if lines else last

    def gone(self) -> bool:
        """The reader closed its end (we still hold ours: it did not see the end of our output)."""
        if self.fd is None:
            return False
        poller = select.poll()
        poller.register(self.fd, 0)  # POLLERR is reported whatever is asked
        if any(ev & select.POLLERR for _, ev in poller.poll(0)):
            self.quit_early = True
        return self.quit_early

    def settle(self, timeout: float, should_stop: Callable[[], bool], fc_reader: Callable[[], bool]) -> str:
        """At the end of our output: wait until the reader has read everything (and GRACE after our last write
        has passed without it quitting), or has gone, or a File Conveyor reader has shown up (its
        acknowledgements decide from then on), at most ``timeout`` s.  Returns "read", "gone", "fc" or
        "timeout" (then the unread lines are not delivered: ``read_upto``).  A stop request shortens the wait to
        STOP_WAIT."""
        if self.fd is None:
            return "read"
        started = time.monotonic()
        deadline = started + timeout
        poller = select.poll()
        poller.register(self.fd, 0)
        stopping = False
        wait = POLL_MS
        while True:
            if self.gone():
                return "gone"
            if fc_reader():
                return "fc"
            now = time.monotonic()
            if unread(self.fd) == 0 and now - self._last_write >= GRACE:
                return "read"
            if not stopping and should_stop():  # a clean stop: the reader still gets a moment to read the rest
                stopping, deadline = True, min(deadline, now + STOP_WAIT)
            if now >= deadline:
                return "timeout"
            poller.poll(wait)
            wait = min(POLL_FAST_MAX_MS if now - started < FAST_FOR else POLL_MAX_MS, wait * 2)


def unread(fd: int) -> int | None:
    """Bytes written into the pipe ``fd`` and not read yet; None when this cannot be known."""
    if FIONREAD is None:
        return None
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, FIONREAD, buf, True)
    except OSError:
        return None
    return buf[0]


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def written_in_file(path: str, origin: str, epoch: str, window: int = 1 << 16) -> int | None:
    """The ``hop.seq`` of the last whole line at the end of the regular file ``path`` (our ``--output``, appended
    to in order) when that line is ours (``origin`` and ``epoch``), else None.  Only the last ``window`` bytes
    are read; a torn last line (killed mid-write) is passed over (``torn_end`` ends it)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - window))
            tail = f.read(window)
    except OSError:
        return None
    lines = tail.split(b"\n")[:-1]  # the part after the last newline is not a whole line
    for line in reversed(lines[1:] if size > window else lines):  # the first may be cut by the window
        if not line.strip():
            continue
        try:
            hop = json.loads(line).get("hop")
        except (ValueError, AttributeError):
            return None
        if isinstance(hop, dict) and hop.get("from") == origin and hop.get("epoch") == epoch:
            seq = hop.get("seq")
            return seq if type(seq) is int else None
        return None
    return None


def torn_end(path: str) -> bool:
    """Whether the regular file ``path`` ends in the middle of a line: the next line appended would be glued to
    it and lost with it."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


PASS_THROUGH = (b"fc-filter", b"fc-tee")  # File Conveyor commands that keep no state and pass lines on as they came


def behind_pass_through(fd: int) -> bool:
    """Whether the process reading the pipe ``fd`` writes into is fc-filter or fc-tee passing lines on into a pipe
    (a scan of /proc, once).  Into a terminal or a file (`fc-watch | fc-filter` at a prompt), what it read is
    written at once, where written is delivered: its reading counts as before."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    # (any of them: `time fc-filter` has the wrapper and fc-filter reading our pipe)
    passing = [pid for pid in ack_check.stdin_readers((st.st_dev, st.st_ino)) if _runs(pid, PASS_THROUGH, words=64)]
    if not passing:
        return False
    try:
        return stat.S_ISFIFO(os.stat(f"/proc/{passing[0]}/fd/1").st_mode)
    except OSError:
        return True  # gone already (a reader after it that failed made it end): not delivered


# the File Conveyor commands that read lines on their stdin and understand every kind of line (``dropped``
# included): the stages that acknowledge what they take, and the pass-throughs in front of them
STAGES = (b"fc-process", b"fc-transport", b"fc-record", b"fc-verify", b"fc-publish", *PASS_THROUGH)
_SHELLS = (b"sh", b"bash", b"dash", b"zsh", b"ksh", b"mksh", b"busybox")
EXEC_WAIT = 1.0  # seconds a reader that is still the shell that forked it gets to become its command


def read_by_stage(fd: int, wait: float = EXEC_WAIT) -> bool:
    """Whether the process reading the pipe ``fd`` (as its stdin) is a File Conveyor stage (``STAGES``), run by
    itself or under a wrapper that has the pipe as its stdin too (`time fc-process`, `nice`, `env`): any word of
    its command line naming one counts.  A shell pipeline forks all its processes at once, so the reader may
    still be the shell, not yet its command: it is looked at again every 5 ms for up to ``wait`` seconds.  No
    pipe, no reader (gone already: a typo in its flags), or any other command (jq, head, a script, tee): False.
    A wrong True (`grep fc-process`) costs re-sending (nobody acknowledges), never a line."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    if not stat.S_ISFIFO(st.st_mode):
        return False
    deadline = time.monotonic() + wait
    while True:
        readers = ack_check.stdin_readers((st.st_dev, st.st_ino))
        if any(_runs(pid, STAGES, words=64) for pid in readers):
            return True
        if not any(_runs(pid, _SHELLS) for pid in readers) or time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _runs(pid: int, commands: tuple[bytes, ...], words: int = 3) -> bool:
    """Whether process ``pid`` runs one of ``commands`` (bin/fc-x as argv[0] or a script given to python; with
    ``words``, anywhere among its first words: a wrapper's command)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(4096).split(b"\0")[:words]
    except OSError:
        return False
    return any(os.path.basename(a) in commands for a in argv)
