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

What is never dropped: a line for a reader that is there but slow.  fc-tee waits
for it (back-pressure), as tee(1) does; a reader that has not opened its FIFO yet
at start is waited for too (``first_wait``), since a reader that never saw a
line from a writer cannot ask that writer for anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

from ...delivery.streams import LongLine
from ...delivery.writer import Output, Writer
from ...errors import Exit


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

    def run(self, lines: Iterable[bytes], error: Callable[[str], None], max_line_bytes: int) -> int:
        """Open the outputs, then copy every whole line of ``lines`` (read only then) to them; a torn last line
        or one longer than ``max_line_bytes`` (a LongLine) is reported to ``error`` and dropped.  Returns the exit
        status."""
        torn = 0
        try:
            self.open_all()
            for lineno, line in enumerate(lines, 1):
                if not line.endswith(b"\n"):
                    torn += 1
                    if isinstance(line, LongLine):
                        error(
                            f"input line {lineno}: {line.length} bytes, longer than --max-line-bytes "
                            f"{max_line_bytes}: {line[:200]!r} (skipped)"
                        )
                    else:
                        error(f"incomplete last line from the writer dropped: {line[:200]!r}")
                    continue
                self.write(line)
        finally:
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

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write whole lines to every output that has a reader."""
        n = data.count(b"\n")
        for out in self.outputs:
            if out.writer.send([data]):
                out.written += n
            else:
                out.skipped += n

    def close(self) -> None:
        for out in self.outputs:
            out.writer.close()

    def summary(self) -> str:
        return "; ".join(
            f"{o.path}: {o.written} line(s)" + (f", {o.skipped} skipped without a reader" if o.skipped else "")
            for o in self.outputs
        )
