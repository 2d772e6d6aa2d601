"""Where a stage's events come from and go to: stdin/stdout, files, or named FIFOs.

A FIFO outlives the processes on either end.  A stage reading one keeps reading
across writers: when the writer goes away (it was restarted by supervisord, say)
the reader waits for the next one instead of ending.  A last line cut in the
middle by a dying writer is reported and dropped, never taken as an event.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from collections.abc import Callable, Iterator
from typing import IO

CHUNK = 1 << 16


def is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def read_lines(fd: int, wake_fd: int | None = None) -> Iterator[bytes]:
    """Lines from a file descriptor, each with its newline; a torn last line comes
    without one.  Returns at end of input, or when ``wake_fd`` becomes readable."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
    buf = b""
    while True:
        ready = dict(poller.poll())
        if wake_fd is not None and wake_fd in ready:
            return
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            continue
        if not data:
            if buf:
                yield buf  # no newline: the writer died mid-line
            return
        buf += data
        if b"\n" in data:
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line + b"\n"


def input_lines(
    path: str | None, stdin: IO[bytes], wake_fd: int | None = None, should_stop: Callable[[], bool] = lambda: False
) -> Iterator[bytes]:
    """Lines from stdin (path None or "-"), a regular file, or a FIFO (reopened for
    each new writer until ``should_stop``)."""
    if path in (None, "-"):
        fd = stdin.fileno() if hasattr(stdin, "fileno") and has_fd(stdin) else None
        if fd is None:  # an in-memory stream (tests)
            yield from stdin
            return
        yield from read_lines(fd, wake_fd)
        return
    assert path is not None
    if not is_fifo(path):
        with open(path, "rb") as f:
            yield from f
        return
    while not should_stop():
        # O_NONBLOCK: opening does not wait for a writer, so a stop request is seen.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            yield from read_lines(fd, wake_fd)
        finally:
            os.close(fd)
        time.sleep(0.05)  # the writer went away: wait for the next one


def has_fd(stream: IO[bytes]) -> bool:
    try:
        stream.fileno()
        return True
    except (OSError, ValueError, AttributeError):
        return False


def open_fifo_for_writing(
    path: str, should_stop: Callable[[], bool], poll: float = 0.1, blocking: bool = False
) -> int | None:
    """Open a FIFO for writing once a reader has it open; None if stopped first.
    ``blocking``: writes then wait for room instead of raising BlockingIOError."""
    while not should_stop():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            if blocking:
                os.set_blocking(fd, True)
            return fd
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        time.sleep(poll)
    return None
