"""The writing side of a hop: whole event lines to stdout, a regular file or a named FIFO.

Every writer of File Conveyor writes through here: fc-watch, every stage (delivery/runner.py), fc-tee, fc-verify
and fc-record --import-queue.  What it guarantees (docs/durability.md, "The writing side"):

- **Whole lines, or an error.**  Lines go to the file descriptor with os.write, looping over partial writes and
  waiting for room on a non-blocking descriptor: a BufferedWriter whose large write is cut short by a departing
  reader reports success (seen with CPython 3.11), and a line believed written but lost would be recorded as done.
- **A reader that went away is always noticed**: BrokenPipeError (the commands ignore SIGPIPE and exit 141).
- **stdout a pipe**: what its reader has read is followed (``Output.tail``, delivery/pipe_tail.py), for readers
  that are not File Conveyor stages; one that closes the pipe before our end marks ``tail.quit_early``.
- **A named FIFO outlives its reader** (supervisord restarts one stage at a time).  When the reader goes, the
  writer either waits for the next one and gives it what ``resend`` says (a stage: its outbox after what its
  readers acknowledged; fc-watch: its rows after what its readers acknowledged, or with none the same lines), or, for
  ``skip`` (fc-tee, where one dead branch must not stop the others), goes on without it and tries the FIFO again
  before each write (fc-tee's idle thread: every REOPEN_EVERY s while no line comes).  A path that is no longer a
  FIFO when opened is refused (never written as a file).  A FIFO of ours is made unreadable by others before it is
  opened (as stdout redirected into one): another user reading it would take lines unseen, which our reader takes
  for lines a filter dropped (``private.fifo_unreadable``).
- **A regular file** is appended to and created owner-only (an existing one of ours is tightened; a symlink on
  its way followed only as fs.protected_symlinks would, another user's file refused: private.open_append): every line
  carries its writer's epoch, which readers take as a sign that a hop is genuine (delivery/ack_check.py).  One
  that ends mid-line (a writer killed while writing) is given the newline first: the torn part stays a bad line
  of its own instead of being glued to our first line.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from .. import private
from ..errors import ConfigError
from .pipe_tail import PipeTail, torn_end
from .streams import has_fd, is_fifo, named_fifo

REOPEN_EVERY = 0.5  # seconds between fc-tee's attempts to open a FIFO without a reader while no line comes
WAIT_POLL = 0.1  # seconds between attempts to open a FIFO while waiting for its reader


# Into a pipe or FIFO, whole lines go in writes of at most PIPE_BUF bytes, which the kernel makes atomic: all of it
# or none, even for a process killed while it waits for room.  A larger write is copied in pieces as the reader
# makes room, and a writer killed in between left the torn start of a line in the FIFO; when the next writer
# (a restarted fc-tee) opened it before the reader had seen an end of input, its first line was glued to the
# torn one and skipped with it as a bad line: `make chaos`'s fc-conveyor topology lost a deletion that way
# (tests/durability/test_torn_line_glued.py).  A single line longer than PIPE_BUF can still be torn.
PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # 4096 on Linux; POSIX guarantees 512


def whole_lines_within(data: bytes, limit: int) -> list[memoryview]:
    """``data`` (whole lines) in pieces of whole lines of at most ``limit`` bytes; a longer line alone."""
    view = memoryview(data)
    pieces = []
    start, n = 0, len(data)
    while start < n:
        if n - start <= limit:
            pieces.append(view[start:])
            break
        end = data.rfind(b"\n", start, start + limit)
        if end < 0:  # one line longer than the limit
            end = data.find(b"\n", start + limit)
            if end < 0:
                end = n - 1
        pieces.append(view[start : end + 1])
        start = end + 1
    return pieces


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a non-blocking stdout: wait for room
            select.select([], [fd], [], 1.0)


class Output:
    """One destination of lines: stdout (path None or "-"), a named FIFO, or a regular file (appended)."""

    def __init__(self, path: str | None, stdout: IO[bytes] | None = None):
        self.path = None if path in (None, "-") else path
        self.stdout = stdout
        self.fifo = self.path is not None and is_fifo(self.path)
        # a FIFO whose writer (we) can be replaced while its reader reads on: --output's, or stdout `> x.fifo`
        # (known once opened); where a pass-through that starts writes events.RESEND first
        self.named_fifo = self.fifo
        self.fd: int | None = None
        self.tail = PipeTail(None)  # stdout a pipe: what its reader has read
        # the null device: what is written there nobody can ever read, so there is nothing to keep for a replay
        # (Sending.discards: a last stage `> /dev/null` stores and encodes no output line)
        self.null = False
        self._stream: IO[bytes] | None = None  # stdout without a file descriptor (an in-memory stream)
        self._pipe: tuple[int, bool] | None = None  # (fd, whether it is a pipe or FIFO)

    @property
    def name(self) -> str:
        return self.path or "stdout"

    @property
    def is_open(self) -> bool:
        return self.fd is not None or self._stream is not None

    def open(self, should_stop: Callable[[], bool] | None = None) -> bool:
        """Open it; a FIFO once a reader has it open, waiting for one until ``should_stop`` (None: one attempt).
        False when a FIFO has no reader (stopped while waiting, or at the one attempt)."""
        if self.path is None:
            stdout = self.stdout
            if stdout is None:
                raise ValueError("an output to stdout needs the stream")
            if has_fd(stdout):
                stdout.flush()  # what the stream buffered goes before our lines
                self.fd = stdout.fileno()
                private.fifo_unreadable(fd=self.fd)  # `> fifo`: as a FIFO named with --output, below
                self.named_fifo = named_fifo(self.fd)
                self.tail = PipeTail(self.fd)
                self.null = is_null(self.fd)
            else:
                self._stream = stdout
            return True
        if not self.fifo:
            private.private_file(self.path)  # owner-only: the lines carry our epoch
            try:  # in /tmp: not through another user's symlink, nor into their file
                self.fd = private.open_append(self.path)
            except private.NotOurs as exc:
                raise ConfigError(f"--output: {exc}") from None
            self.null = is_null(self.fd)
            if torn_end(self.path):  # a process killed mid-line: the torn part stays a (bad) line of its own
                self.write(b"\n")
            return True
        # Unreadable by others before it is opened: another user who can open a FIFO for reading takes lines out
        # of it unseen, and our reader, finding a gap in the seqs, takes them for lines a filter in between
        # dropped and acknowledges past them: those files are never sent (nor sent again).
        private.fifo_unreadable(self.path)
        while True:
            fd = _open_fifo(self.path)
            if fd is not None:
                self.fd = fd
                return True
            if should_stop is None or should_stop():
                return False
            time.sleep(WAIT_POLL)

    def write(self, data: bytes) -> None:
        """All of ``data``, or an exception (BrokenPipeError: the reader has gone)."""
        if self._stream is not None:
            self._stream.write(data)
            self._stream.flush()
            return
        fd = self.fd
        if fd is None:
            raise BrokenPipeError(errno.EPIPE, f"{self.name} is not open")
        if len(data) > PIPE_BUF and self._is_pipe(fd):
            for piece in whole_lines_within(data, PIPE_BUF):
                _write_all(fd, piece)
        else:
            _write_all(fd, data)

    def _is_pipe(self, fd: int) -> bool:
        if self._pipe is None or self._pipe[0] != fd:
            try:
                self._pipe = (fd, stat.S_ISFIFO(os.fstat(fd).st_mode))
            except OSError:
                return False
        return self._pipe[1]

    def reader_gone(self) -> bool:
        """A pipe, FIFO or socket whose reader has closed its end (we still hold ours)."""
        if self.fd is None:
            return False
        poller = select.poll()
        poller.register(self.fd, 0)  # POLLERR is reported whatever is asked
        return any(ev & select.POLLERR for _, ev in poller.poll(0))

    def release(self) -> bool:
        """Let go of a stdout that is a pipe or FIFO before the process's exit (after the last line, and after
        the writer said where its lines go on: runs.ending): its reader sees the end of our output now, not after
        our state file is closed and the interpreter has finished.  The descriptor stays valid (/dev/null), for
        the process's stdout object; a write from now on raises BrokenPipeError.  False: nothing let go of."""
        fd = self.fd
        if self.path is not None or fd is None:
            return False
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return False
        except OSError:
            return False
        self.tail.detach()
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        self.fd = None
        return True

    def close(self) -> None:
        """Close what we opened (stdout stays open: it is the process's)."""
        if self.fd is not None and self.path is not None:
            os.close(self.fd)
        self.fd = None


class Writer:
    """Writes whole lines to an Output; what happens when a FIFO's reader goes is ``on_gone``:

    - "wait": wait for the next reader (until ``should_stop``: then BrokenPipeError) and write to it what
      ``resend()`` gives (no ``resend``, or one that returns None: the same lines);
    - "skip": go on without it (the lines are not written there; ``send`` returns False), and try to open it
      again at each ``send``: never a line skipped once a new reader has the FIFO open.  A restarted reader asks
      the writer behind us for what it lacks as soon as its FIFO is open, and the writer answers within
      milliseconds; tried only every 0.5 s, that answer was skipped, the first line that got through carried its
      tag, and the reader's mark went past the skipped lines (tests/stages/test_tee.py, ``keep_coming``).

    stdout and regular files raise BrokenPipeError either way.  ``warn`` is told when a FIFO's reader goes or comes
    back, ``info`` when we wait for one."""

    def __init__(
        self,
        output: Output,
        on_gone: str = "wait",
        resend: Callable[[], Iterable[bytes]] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        warn: Callable[[str], None] = lambda text: None,
        info: Callable[[str], None] = lambda text: None,
    ):
        assert on_gone in ("wait", "skip")
        self.output = output
        self.on_gone = on_gone
        self.resend = resend
        self.should_stop = should_stop
        self.warn = warn
        self.info = info
        self.gone_since: float | None = None
        self._buf: list[bytes] = []

    @property
    def tail(self) -> PipeTail:
        return self.output.tail

    def open(self, wait: bool = True) -> bool:
        """Open the output (a FIFO: once a reader has it; ``wait`` False: one attempt).  False when it has none."""
        if self.output.fifo and wait and not self.output.open(None):
            self.info(f"waiting for a reader on {self.output.name}")
        return self.output.is_open or self.output.open(self.should_stop if wait else None)

    def send(self, lines: Sequence[bytes], seqs: Sequence[int] = ()) -> bool:
        """Write whole lines (``seqs``: theirs, for the pipe tail).  False: skipped, the FIFO has no reader."""
        if not lines:
            return True
        out = self.output
        data = b"".join(lines)
        while True:
            if not out.is_open and self.on_gone == "skip" and not self.reopen():
                return False  # (wait: the write below finds it closed, and waits for a reader)
            try:
                out.write(data)
            except BrokenPipeError:
                if not out.fifo:
                    out.tail.quit_early = out.tail.active  # it left before our end: it took nothing for sure
                    raise
                out.close()
                self.gone_since = time.monotonic()
                if self.on_gone == "skip":
                    self.warn(f"{out.name}: the reader went away; skipping it until a new one opens it")
                    return False
                self.warn(f"the reader of {out.name} went away; waiting for a new one")
                if not out.open(self.should_stop):
                    raise BrokenPipeError(errno.EPIPE, f"stopped while waiting for a reader on {out.name}") from None
                self._back()
                again = self.resend() if self.resend is not None else None
                if again is not None:
                    data = b"".join(again)  # everything the new reader may lack: it drops what it had
                    if not data:
                        return True
                continue
            if seqs:
                out.tail.wrote(list(seqs), [len(line) for line in lines])
            return True

    def reopen(self) -> bool:
        """Skip mode: one attempt to open a FIFO without a reader (gone, or never there)."""
        if self.on_gone != "skip" or not self.output.open(None):
            return False
        self._back()
        return True

    def _back(self) -> None:
        if self.gone_since is not None:
            self.warn(f"{self.output.name}: a reader is back after {time.monotonic() - self.gone_since:.0f} s")
            self.gone_since = None

    # -- buffered: lines held until flush() (fc-verify, fc-record --import-queue) -------------

    def add(self, line: bytes) -> None:
        self._buf.append(line)

    @property
    def pending(self) -> int:
        return len(self._buf)

    def flush(self) -> None:
        lines, self._buf = self._buf, []
        self.send(lines)

    def close(self) -> None:
        self.output.close()


def stdout_writer(stdout: IO[bytes]) -> Writer:
    """A writer to the process's stdout (opened: nothing to wait for)."""
    writer = Writer(Output(None, stdout))
    writer.open()
    return writer


def is_null(fd: int) -> bool:
    """Whether ``fd`` is the null device (a character device that is /dev/null's), where lines go to nobody."""
    try:
        st = os.fstat(fd)
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev
    except OSError:
        return False


def _open_fifo(path: str) -> int | None:
    """A FIFO opened for writing, with blocking writes (a slow reader slows us down, never loses lines); None
    when no reader has it open (or it is not there yet)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):  # no reader yet; FIFO not made yet
            return None
        raise
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is no longer a FIFO")
    os.set_blocking(fd, True)
    return fd
