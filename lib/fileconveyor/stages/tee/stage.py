"""fc-tee: copy one event stream to several outputs (one per rule), byte for byte.

fc-tee keeps no state and needs none.  Lines pass through untouched, hop field
included, so each reader downstream acknowledges to the stage that *wrote* the
line (fc-watch, say), not to fc-tee; that writer re-sends what any reader has
not acknowledged (docs/durability.md).  That is what makes dropping safe:

- an output whose reader is gone (killed, being restarted) is skipped, not waited
  for, so one dead branch never stops the others; the restarted reader tells the
  writer it is new, and the writer re-sends what it missed, through fc-tee, to
  everyone (the others drop lines they already had);
- fc-tee itself killed: the writer's FIFO loses its reader, and the writer
  re-sends what was not acknowledged when fc-tee comes back.

What is never dropped: a line for a reader that is there but slow.  fc-tee waits
for it (back-pressure), as tee(1) does; a reader that has not opened its FIFO yet
at start is waited for too (``first_wait``), since a reader that never saw a
line from a writer cannot ask that writer for anything.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ... import private
from ...delivery.streams import is_fifo

REOPEN_EVERY = 0.5  # seconds between attempts to reopen an output whose reader is gone


@dataclass
class Output:
    path: str
    fd: int | None = None
    fifo: bool = False
    seen_reader: bool = False  # a reader had it open once: from then on, a gone reader is skipped
    next_try: float = 0.0
    written: int = 0
    skipped: int = 0
    gone_since: float | None = None
    notes: list[str] = field(default_factory=list)


class Tee:
    def __init__(
        self,
        paths: Iterable[str],
        stdout_fd: int | None,
        warn: Callable[[str], None],
        info: Callable[[str], None],
        should_stop: Callable[[], bool],
        first_wait: float = 30.0,
    ):
        self.outputs = [Output(p) for p in paths]
        self.stdout_fd = stdout_fd
        self.warn = warn
        self.info = info
        self.should_stop = should_stop
        self.first_wait = first_wait
        self._started = time.monotonic()

    # -- opening ---------------------------------------------------------------------

    def open_all(self) -> None:
        """Open regular files at once; wait up to ``first_wait`` for every FIFO's first reader."""
        for out in self.outputs:
            if out.path == "-":
                out.fd = self.stdout_fd
                continue
            out.fifo = is_fifo(out.path)
            if not out.fifo:
                # owner-only: the lines carry their writer's epoch (delivery/ack_check.py)
                private.private_file(out.path)
                out.fd = os.open(out.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, private.FILE_MODE)
        deadline = time.monotonic() + self.first_wait
        waiting = [o for o in self.outputs if o.fifo]
        announced = False
        while waiting and not self.should_stop():
            waiting = [o for o in waiting if not self._try_open(o)]
            if not waiting:
                break
            if time.monotonic() >= deadline:
                for o in waiting:
                    self.warn(
                        f"no reader on {o.path} after {self.first_wait:g} s; going on without it "
                        "(a File Conveyor stage reading it later gets what it missed from the "
                        "File Conveyor stage that wrote it; other readers do not)"
                    )
                break
            if not announced:
                self.info("waiting for readers on " + ", ".join(o.path for o in waiting))
                announced = True
            time.sleep(0.05)

    def _try_open(self, out: Output) -> bool:
        try:
            fd = os.open(out.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):  # no reader (yet); FIFO not made yet
                return False
            raise
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{out.path} is no longer a FIFO")
        # Blocking writes: a slow reader slows us down rather than losing lines.
        os.set_blocking(fd, True)
        out.fd = fd
        if out.gone_since is not None:
            self.warn(f"{out.path}: a reader is back after {time.monotonic() - out.gone_since:.0f} s")
            out.gone_since = None
        out.seen_reader = True
        return True

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write whole lines to every output that has a reader."""
        now = time.monotonic()
        for out in self.outputs:
            if out.fd is None:
                if out.fifo and now >= out.next_try and self._try_open(out):
                    pass
                else:
                    out.skipped += data.count(b"\n")
                    out.next_try = max(out.next_try, now + REOPEN_EVERY) if out.next_try <= now else out.next_try
                    continue
            assert out.fd is not None
            try:
                _write_all(out.fd, data)
                out.written += data.count(b"\n")
            except BrokenPipeError:
                if not out.fifo:
                    raise
                os.close(out.fd)
                out.fd = None
                out.gone_since = time.monotonic()
                out.next_try = out.gone_since + REOPEN_EVERY
                out.skipped += data.count(b"\n")
                self.warn(f"{out.path}: the reader went away; skipping it until a new one opens it")

    def close(self) -> None:
        for out in self.outputs:
            if out.fd is not None and out.fd != self.stdout_fd:
                os.close(out.fd)
            out.fd = None

    def summary(self) -> str:
        return "; ".join(
            f"{o.path}: {o.written} line(s)" + (f", {o.skipped} skipped without a reader" if o.skipped else "")
            for o in self.outputs
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # stdout may be non-blocking: wait for room
            select.select([], [fd], [], 1.0)
