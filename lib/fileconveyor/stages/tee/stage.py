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
  re-sends what was not acknowledged when fc-tee comes back; each reader, whose
  FIFO's writer went, asks for it too (a new session), for a writer that wrote
  nothing meanwhile and so never saw fc-tee go.

A reader that comes late (its FIFO opened after ``first_wait``, or after its
predecessor went) while no line arrives is sent the last line fc-tee passed on
of each writer (writers.py), within REOPEN_EVERY: on those a File Conveyor reader
registers with the lines' writers, which send it what it missed
(docs/durability.md, "A reader that comes late"); a reader that had them drops
them by ``hop.seq``.  Without it a late branch got nothing until the next change,
and the writer, holding no line for a reader it had never heard of, could have
forgotten them by then.

What is never dropped: a line for a reader that is there but slow.  fc-tee waits
for it (back-pressure), as tee(1) does; a reader that has not opened its FIFO yet
at start is waited for too (``first_wait``), since a reader that never saw a
line from a writer cannot ask that writer for anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

from ... import events as E
from ...delivery import ack_check
from ...delivery.passthrough import copy_lines
from ...delivery.writer import REOPEN_EVERY, Output, Writer
from ...errors import Exit
from .writers import LastLines


@dataclass
class Branch:
    """One output and what went to it."""

    writer: Writer
    written: int = 0
    skipped: int = 0

    @property
    def path(self) -> str:
        return self.writer.output.path or "-"


class Tee:
    def __init__(
        self,
        paths: Iterable[str],
        stdout: IO[bytes] | None,
        warn: Callable[[str], None],
        info: Callable[[str], None],
        should_stop: Callable[[], bool],
        first_wait: float = 30.0,
        source: ack_check.Ident | None = None,
    ):
        # "skip": an output whose reader is gone is not waited for (delivery/writer.py); it is opened again
        # every REOPEN_EVERY s, and its writer re-sends what its new reader lacks
        self.outputs = [
            Branch(Writer(Output(p, stdout), "skip", should_stop=should_stop, warn=warn, info=info)) for p in paths
        ]
        self.warn = warn
        self.info = info
        self.should_stop = should_stop
        self.first_wait = first_wait
        # each writer's last line passed on, for a reader that comes while none arrives (writers.py: a line
        # without a hop, a resend line that a pass-through restarted before us writes, registers the new reader with
        # nobody, and a line with a made-up hop with nobody of ours)
        # nobody of ours (``source``: our input, when a pipe or FIFO: writers.input_pipe)
        self.last = LastLines(source=source)
        self._lock = threading.Lock()  # the outputs' writers: the main thread's lines, the idle thread's last line
        self._done = threading.Event()

    def run(self, batches: Iterable[list[bytes]], error: Callable[[str], None], max_line_bytes: int) -> int:
        """Open the outputs, then copy every whole line of ``batches`` (input_batches: read only then) to them; a
        torn last line or one longer than ``max_line_bytes`` (a LongLine) is reported to ``error`` and dropped
        (delivery/passthrough.py).  Returns the exit status."""
        torn = 0
        idle = threading.Thread(target=self._late_readers, name="late-readers", daemon=True)
        try:
            self.open_all()
            self.announce()
            idle.start()
            torn = copy_lines(batches, self.write, error, max_line_bytes)
        finally:
            self._done.set()
            if idle.is_alive():
                idle.join()
            self.close()
        self.info(self.summary())
        return Exit.EVENTS_FAILED if torn else Exit.OK

    # -- opening ---------------------------------------------------------------------

    def open_all(self) -> None:
        """Open stdout and regular files at once; wait up to ``first_wait`` for every FIFO's first reader."""
        waiting = []
        for out in self.outputs:
            if not out.writer.open(wait=False):
                waiting.append(out)
        deadline = time.monotonic() + self.first_wait
        announced = False
        while waiting and not self.should_stop():
            waiting = [o for o in waiting if not o.writer.open(wait=False)]
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

    def announce(self) -> None:
        """Tell each FIFO's reader that a new fc-tee writes to it (events.RESEND): the reader may have had lines
        of our predecessor left to read when we opened its FIFO, and then never saw an end of input, so it would
        not know that lines were lost between (those the killed one had read, and what the writer behind us sent
        while no fc-tee read it); it asks its writers for what it has not acknowledged."""
        for out in self.outputs:
            if out.writer.output.named_fifo and out.writer.output.is_open:
                out.writer.send([E.RESEND_LINE])

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write whole lines to every output that has a reader."""
        n = data.count(b"\n")
        with self._lock:
            for out in self.outputs:
                if out.writer.send([data]):
                    out.written += n
                else:
                    out.skipped += n
            self.last.note(data)

    def _late_readers(self) -> None:
        """While no line arrives: give an output whose reader came since the last line (a late first reader, or
        one back after its predecessor went) each writer's last line, for it to register on (the module's doc)."""
        while not self._done.wait(REOPEN_EVERY):
            with self._lock:
                lines = self.last.lines()
                if not lines:
                    continue
                for out in self.outputs:
                    if not out.writer.output.is_open and out.writer.reopen() and out.writer.send(lines):
                        self.info(
                            f"{out.path}: a reader came; sent it the last line of each of {len(lines)} writer(s), "
                            "for it to ask them for the rest"
                        )

    def close(self) -> None:
        for out in self.outputs:
            out.writer.close()

    def summary(self) -> str:
        return "; ".join(
            f"{o.path}: {o.written} line(s)" + (f", {o.skipped} skipped without a reader" if o.skipped else "")
            for o in self.outputs
        )
