"""fc-filter as a pass-through stage: no state file, no outbox, no acknowledgements of its own.

Whether a line goes on is a pure function of the line (its path, rel, size, kind), so fc-filter needs no
durability of its own (docs/durability.md, "Pass-through stages"): a line it passes is written byte for byte as
it came, ``hop`` included, and the reader after it acknowledges straight to the stage that wrote it (fc-watch);
a line it drops leaves a gap in that writer's seqs, which the reader acknowledges past.  Killed, it loses no
line: what it had read and not passed on was never acknowledged, and its writer re-sends it (to the next reader
of its FIFO, or on the next run of a pipe).

Up to version 2026-12 fc-filter was a durable stage with a state file.  One of those left with lines not yet
acknowledged by its reader (or never written) is run the old way once, with a warning, so that nothing it held
is lost (``unfinished``); from then on it is not used.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ... import events as E
from ...delivery import acks, pipe_tail
from ...delivery.passthrough import copy_lines
from ...delivery.streams import input_batches, is_fifo, open_fifo
from ...delivery.writer import Output, Writer
from ...errors import Exit
from ...events import usual_head
from ...report import Reporter
from ...stopping import Stopper
from .stage import FilterStage

_BLANK = frozenset(b" \t\r\n")


def unfinished(path: Path) -> int:
    """What a state file of the durable fc-filter still holds for its reader: inbox rows, and outbox lines after
    what its File Conveyor readers acknowledged (with none: after what it wrote).  0: no such file, or nothing
    left; a file that cannot be read counts as holding something (the durable runner says what is wrong)."""
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 1
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "outbox", "inbox"} <= tables:
            return 0 if not tables else 1  # an empty file (made, never used): nothing held
        (inbox,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
        meta = dict(conn.execute("SELECT k, v FROM meta WHERE k IN ('epoch', 'written')").fetchall())
        readers = acks.readers(conn, str(meta.get("epoch"))) if "acks" in tables else {}
        after = min(readers.values()) if readers else int(meta.get("written") or 0)
        from ...delivery.durable import outbox_lines  # (only for a state file of an earlier version)

        return int(inbox) + outbox_lines(conn, after)
    except (sqlite3.Error, ValueError, TypeError):
        return 1
    finally:
        conn.close()


def passes_through(output_path: str | None, stdout: IO[bytes]) -> bool:
    """Whether fc-filter runs as a pass-through: when what it writes goes to a File Conveyor stage (which
    acknowledges to the writer before us, and understands ``dropped`` lines), a terminal, a file or a named FIFO
    (``--output``, a chain of stages: supervisord, fc-conveyor).  Into a pipe read by anything else (`| jq`,
    `| head`, a script of yours) it runs as the durable stage it was: nobody after it acknowledges, so it keeps
    its lines and counts as delivered what its reader has read (delivery/pipe_tail.py), and the next run sends
    only what was not; passing through there, its writer could never tell, and each run sent every line again."""
    if output_path is not None:
        return True
    try:
        fd = stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return True
    except (AttributeError, OSError, ValueError):
        return True  # no descriptor (a library caller's buffer): written is delivered
    return pipe_tail.read_by_stage(fd)


class PassFilter:
    """The per-line decision: decode what matching needs, report a bad line by number (skipped), pass the rest
    on untouched; a line without a hop (a third-party writer's) is judged like any other.

    A line dropped after the last one of its writer passed on leaves a gap at the end, which no later line of
    that writer closes yet: the reader after us would acknowledge only up to the last line it got, and its
    writer would wait for the rest at its end (exit 141), re-send it at each start, and fc-consume hold its
    messages unacknowledged (a rule whose files are rare held every message after its last match).  So after
    each read, for each writer whose last line here was dropped, a ``dropped`` line with that line's hop goes
    on (events.DROPPED): the reader moves its mark there and does nothing else with it."""

    def __init__(self, stage: FilterStage, error: Callable[[str], None]):
        self.stage = stage
        self.error = error
        self.bad = 0
        self.gaps: dict[str, dict] = {}  # writer (hop.from) -> the hop of its last line, dropped

    def keep(self, line: bytes, lineno: int) -> bytes | None:
        """The line to pass on (``line``, or the whole line glued to a torn start in it: events.unglue), or None."""
        if line[0] in _BLANK and not line.strip():
            return None
        try:
            seen = usual_head(line)  # fc-watch's line, read without the JSON parser; else decoded
            if seen is not None:
                ev, hop = seen
            else:
                try:
                    ev = E.decode(line)
                except E.EventError:
                    glued = E.unglue(line)
                    if glued is None:
                        raise
                    self.report(lineno, E.TORN_START, glued.torn)
                    line, ev = glued.line, glued.event
                hop = ev.get("hop")
            if ev["kind"] == E.DROPPED:  # a filter before us dropped it: so do we, as its last dropped line
                kept = False
            elif ev["kind"] == E.RESEND:  # a pass-through before us started: for our reader (no hop, no gap)
                return line
            else:
                kept = self.stage.passes(ev)
        except E.EventError as exc:
            self.report(lineno, str(exc), line)
            return None
        if hop is not None:
            if kept:
                self.gaps.pop(hop["from"], None)
            else:
                self.gaps[hop["from"]] = hop
        return line if kept else None

    def report(self, lineno: int, reason: str, line: bytes) -> None:
        self.bad += 1
        shown = line[:200].decode("utf-8", "replace").rstrip("\n")
        self.error(f"input line {lineno}: {reason}: {shown!r} (skipped)")

    def marks(self) -> list[bytes]:
        """The ``dropped`` lines for the gaps left at the end of this read (hop.for kept: a replay all dropped
        here still tells a reader waiting for it that it has begun)."""
        if not self.gaps:
            return []
        out = [E.encode({"v": E.VERSION, "kind": E.DROPPED, "hop": hop}) for hop in self.gaps.values()]
        self.gaps.clear()
        return out


def pass_through(
    stage: FilterStage,
    input_path: str | None,
    output_path: str | None,
    stdin: IO[bytes],
    stdout: IO[bytes],
    rep: Reporter,
    stop: Stopper,
    max_line_bytes: int,
) -> int:
    """Run fc-filter as a pass-through; the exit status."""
    should_stop = lambda: stop.requested  # noqa: E731
    stage.warn = rep.warn
    # "wait": a FIFO's reader that goes is waited for (back-pressure, as any stage); what it had not
    # acknowledged its writer upstream re-sends once it registers again, through us
    writer = Writer(Output(output_path, stdout), "wait", should_stop=should_stop, warn=rep.warn, info=rep.info)
    decide = PassFilter(stage, rep.error)
    try:
        # the output first: a reader that has not opened its FIFO yet must see our first line to register
        if not writer.open():
            return Exit.OK  # stopped while waiting for a reader (the signal's status is the exit status)
        # then the input, before our reader hears of us: the replay it asks for comes through fc-tee, which skips
        # a FIFO nobody reads
        opened = open_fifo(input_path) if input_path not in (None, "-") and is_fifo(input_path) else None
        if writer.output.named_fifo:
            # our reader may still have had our predecessor's lines to read when we opened its FIFO, and then
            # never saw an end of input: it learns here that lines may be lost between (events.RESEND)
            writer.send([E.RESEND_LINE])
        batches = input_batches(input_path, stdin, stop.fileno(), should_stop, max_line_bytes, opened=opened)
        torn = copy_lines(
            batches, lambda data: writer.send([data]), rep.error, max_line_bytes, decide.keep, decide.marks
        )
        writer.output.release()  # our reader sees our end now, not after the interpreter has finished
    finally:
        writer.close()
    rep.info(f"{stage.progress()} (passed through: fc-filter keeps no state)")
    return Exit.EVENTS_FAILED if torn or decide.bad else Exit.OK
