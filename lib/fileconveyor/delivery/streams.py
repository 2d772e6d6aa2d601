"""Where a stage's events come from and go to: stdin/stdout, files, or named FIFOs.

A FIFO outlives the processes on either end.  A stage reading one keeps reading
across writers: when the writer goes away (it was restarted by supervisord, say)
the reader waits for the next one instead of ending.  A last line cut in the
middle by a dying writer is reported and dropped, never taken as an event.
"""

from __future__ import annotations

import os
import select
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO

CHUNK = 1 << 16


def is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def named_fifo(fd: int) -> bool:
    """Whether ``fd`` is a named FIFO (`> x.fifo`, `< x.fifo`: one whose other end a new process can open), not a
    pipe (`|`: its other end goes only with its process).  Both are S_ISFIFO; every pipe lives on the kernel's
    pipe file system, whose device a FIFO in a directory never has.  Unknown (no pipe could be made to compare):
    False, as a pipe."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) and st.st_dev != _pipes_device()


_pipe_dev: int | None = None


def _pipes_device() -> int | None:
    """The device of every pipe made by pipe(2), looked at once (None: no pipe could be made now)."""
    global _pipe_dev
    if _pipe_dev is None:
        try:
            r, w = os.pipe()
        except OSError:  # out of descriptors: looked at again next time
            return None
        try:
            _pipe_dev = os.fstat(r).st_dev
        finally:
            os.close(r)
            os.close(w)
    return _pipe_dev


MAX_LINE_BYTES = 1 << 20  # the default of --max-line-bytes


class LongLine(bytes):
    """Stands for a line longer than the limit, skipped while it was read: its first
    bytes (for the message) and its ``length``.  It ends without a newline, so a
    reader that checks for one never takes it as an event."""

    length: int

    def __new__(cls, head: bytes, length: int) -> LongLine:
        self = super().__new__(cls, head[:200].rstrip(b"\n"))
        self.length = length
        return self


def read_lines(fd: int, wake_fd: int | None = None, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines from a file descriptor, each with its newline; a torn last line comes
    without one, a line longer than ``limit`` as a LongLine (never held whole in
    memory).  Returns at end of input, or when ``wake_fd`` becomes readable."""
    for batch in read_batches(fd, wake_fd, limit):
        yield from batch


def read_batches(fd: int, wake_fd: int | None = None, limit: int = MAX_LINE_BYTES) -> Iterator[list[bytes]]:
    """read_lines, a list of lines per read (never empty): a stage's reader hands them on a batch at a time,
    not a queue message per line (delivery/intake.py)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
    buf = b""
    skipping: LongLine | None = None  # the head of a line too long, while the rest is read and dropped
    while True:
        ready = dict(poller.poll())
        if wake_fd is not None and wake_fd in ready:
            return
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            continue
        if not data:
            if skipping is not None:
                yield [skipping]
            elif buf:
                yield [buf]  # no newline: the writer died mid-line
            return
        out: list[bytes] = []
        if skipping is not None:
            end = data.find(b"\n")
            if end < 0:
                skipping.length += len(data)
                continue
            skipping.length += end
            out.append(skipping)
            skipping, data = None, data[end + 1 :]
        buf += data
        if b"\n" in data:
            *lines, buf = buf.split(b"\n")
            if len(data) + len(lines[0]) > limit:  # only then can one of them be too long
                out.extend(line + b"\n" if len(line) <= limit else LongLine(line, len(line)) for line in lines)
            else:
                out.extend([line + b"\n" for line in lines])
        if len(buf) > limit:
            skipping, buf = LongLine(buf, len(buf)), b""
        if out:
            yield out


def _limited(lines: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The limit, for lines that are already in memory (an in-memory stream in tests)."""
    for line in lines:
        yield line if len(line) <= limit + 1 else LongLine(line, len(line.rstrip(b"\n")))


def input_lines(
    path: str | None,
    stdin: IO[bytes],
    wake_fd: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    limit: int = MAX_LINE_BYTES,
    on_reopen: Callable[[bool], None] | None = None,
) -> Iterator[bytes]:
    """Lines from stdin (path None or "-"), a regular file, or a FIFO (reopened for
    each new writer until ``should_stop``; ``on_reopen`` is called when writers that
    wrote something all went); lines longer than ``limit`` bytes come as LongLine."""
    for batch in input_batches(path, stdin, wake_fd, should_stop, limit, on_reopen):
        yield from batch


def open_fifo(path: str) -> int:
    """A named FIFO's read end, opened without waiting for a writer (O_NONBLOCK: a stop request is still seen)."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def input_batches(
    path: str | None,
    stdin: IO[bytes],
    wake_fd: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    limit: int = MAX_LINE_BYTES,
    on_reopen: Callable[[bool], None] | None = None,
    opened: int | None = None,
) -> Iterator[list[bytes]]:
    """input_lines, a list of lines at a time (what one read brought; never empty).  A named FIFO is read again
    and again, each writer in turn; ``opened``: its read end, opened already (open_fifo).  ``on_reopen`` is called
    when it is open again after its writers went, before the next writer's first line is read: a reader that asks
    its writers for what it lacks must have its FIFO open when they answer, or a writer between them that skips a
    FIFO without a reader (fc-tee) drops the answer.  Called whether or not the writers that went wrote a line: a
    pass-through that dies before its first write has read lines all the same.  Called again as the next writer's
    first lines come, before they are handed on: the answer to the first call can still be dropped when what
    is missing is a pass-through between fc-tee and us (fc-filter restarted a few seconds later), and lines
    coming through it prove that the way from fc-tee to us is whole again (``on_reopen(True)``; False: the first
    call).  (The end of a FIFO's input comes
    only after a writer came and went: poll reports no hang-up on a read end that has had no writer since it was
    opened, so this is no busy loop.)"""
    if path in (None, "-"):
        fd = stdin.fileno() if hasattr(stdin, "fileno") and has_fd(stdin) else None
        if fd is None:  # an in-memory stream (tests): a line at a time, as it may come live
            for line in _limited(stdin, limit):
                yield [line]
            return
        yield from read_batches(fd, wake_fd, limit)
        return
    assert path is not None
    if opened is None and not is_fifo(path):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield from read_batches(fd, None, limit)
        finally:
            os.close(fd)
        return
    fd = opened if opened is not None else open_fifo(path)
    try:
        reopened = False
        while True:
            for batch in read_batches(fd, wake_fd, limit):
                if reopened and on_reopen is not None:
                    on_reopen(True)
                reopened = False
                yield batch
            os.close(fd)
            fd = -1
            if should_stop():
                return
            time.sleep(0.05)  # the writer went away: wait for the next one
            fd = open_fifo(path)
            if on_reopen is not None and not should_stop():
                on_reopen(False)
            reopened = True
    finally:
        if fd >= 0:
            os.close(fd)


def has_fd(stream: IO[bytes]) -> bool:
    try:
        stream.fileno()
        return True
    except (OSError, ValueError, AttributeError):
        return False
