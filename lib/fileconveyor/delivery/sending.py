"""The writing side of a writer with a state file: its lines written, replays, how far its output is delivered.

``Sender`` is what fc-watch (stages/watch/state.py, whose lines are re-made from its rows) and every stage
share; ``Sending`` is a stage's, whose lines are in its outbox.  A writer commits each line first (a row, or the
outbox), then hands it here, to be written through the one writer (delivery/writer.py).  What the writing side of
docs/durability.md needs:

- the outbox re-sent at start, to a reader that is new or restarted (acks.Replays: twice a second), and to the
  next reader of an --output FIFO whose reader went away;
- ``delivered``: how far the output counts as taken when no File Conveyor reader says so (the ``written`` mark of
  the state file): written (a file, a terminal), read from a stdout pipe (delivery/pipe_tail.py), or, when that
  pipe's reader left before our end, nothing of this run;
- at the end: ``settle`` (the reader of a stdout pipe reads what is left) and ``behind`` (the File Conveyor
  readers heard from during this run that have not acknowledged everything yet), and ``close_early``: a stdout
  pipe let go of before we wait for their acknowledgements, so that they see the end of our output at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO

from .. import events as E
from ..report import Reporter
from . import ack_check, acks
from .acks import Replays, behind
from .durable import StageState
from .pipe_tail import PipeTail, written_in_file
from .writer import Output, Writer

REPLAY_BATCH = 4096  # outbox lines per write of a replay


class Sender:
    """Lines through a Writer (None: a state opened only to be read), the readers that are new or restarted
    (acks.Replays), and ``delivered``: how far lines count as taken when no File Conveyor reader says so."""

    def __init__(self, writer: Writer | None, db: sqlite3.Connection, epoch: str, written: int):
        self.writer = writer
        self.db = db
        self.epoch = epoch
        self.replays = Replays(db, epoch)  # our readers
        self.last = written  # the seq of the last line written
        self.run_start = written  # what the last run delivered

    @property
    def tail(self) -> PipeTail:
        """What the reader of a stdout pipe has read (delivery/pipe_tail.py)."""
        return self.writer.tail if self.writer is not None else _NO_TAIL

    @property
    def tag(self) -> list[str] | None:
        """hop.for of our lines for now: the readers a replay was for (acks.Replays)."""
        return self.replays.tag

    def write(self, lines: list[bytes], seqs: list[int]) -> None:
        """Write committed lines (new ones, or a replay's) whole; raises BrokenPipeError when the reader of
        stdout has gone."""
        if not lines:
            return
        if self.writer is None:
            raise RuntimeError("a state opened without a writer has no output for its lines")
        self.writer.send(lines, seqs)

    def readers(self) -> dict[str, int]:
        return acks.readers(self.db, self.epoch)

    def delivered(self) -> int:
        """How far our output counts as taken when no File Conveyor reader says so (the ``written`` mark of the
        state file): written (a file, a terminal), read from the pipe, or, when the pipe's reader left before
        our end (head, a stage that failed), nothing of this run."""
        return self.tail.delivered(self.last, self.run_start)

    def must_settle(self) -> bool:
        """Our output is a stdout pipe and no File Conveyor reader acknowledges it: the end waits for its reader."""
        return self.tail.active and not self.readers()

    def wait_read(self, timeout: float, should_stop: Callable[[], bool]) -> str:
        """The end, with no File Conveyor reader: wait until the reader of our stdout pipe has read what we
        wrote, or has gone; "read", "gone", "timeout", or "fc" when a File Conveyor reader showed up meanwhile
        (its acknowledgements decide from then on).  PipeTail.settle says more."""
        return self.tail.settle(timeout, should_stop, lambda: bool(self.readers()))


_NO_TAIL = PipeTail(None)


class Sending(Sender):
    """A stage's writing side (delivery/runner.py): its outbox lines, and the end of its output."""

    def __init__(
        self,
        state: StageState,
        output: str | None,
        stdout: IO[bytes],
        rep: Reporter,
        should_stop: Callable[[], bool],
    ):
        # a FIFO whose reader went away: the next reader gets everything not acknowledged; it drops what it had
        writer = Writer(
            Output(output, stdout),
            "wait",
            resend=lambda: (line for _, line in self._outbox(self.state.replay_from())),
            should_stop=should_stop,
            warn=rep.warn,
            info=rep.info,
        )
        super().__init__(writer, state.db, state.epoch, state.written)
        self.writer: Writer = writer
        self.state = state
        self.rep = rep
        self.should_stop = should_stop
        self.started = time.time()
        self.log: deque[tuple[float, int]] = deque()  # (when, last seq) of each write, for releasing unacknowledged
        self._behind: dict[str, tuple[int, float]] = {}
        self._data_version: tuple[int, int] | None = None  # PRAGMA data_version and our last seq at the last look
        self._watch: list[int] | None = None  # close_early: pidfds of the processes that may still acknowledge

    def open(self) -> bool:
        """Open our output (an --output FIFO: once a reader has it); False when stopped while waiting."""
        out = self.writer.output
        if out.path is not None and not out.fifo:
            # a regular file says how far a run of ours killed before it recorded it got: those lines are not
            # appended again
            upto = written_in_file(out.path, self.state.origin, self.state.epoch)
            if upto is not None and self.last < upto < self.state.next_seq:
                self.last = upto
        return self.writer.open()

    @property
    def discards(self) -> bool:
        """Our output is the null device: no line of ours can ever be read, so none is encoded, stored in the
        outbox or written (delivery/commit.py); the loop and its commits go on as for any output."""
        return self.writer.output.null

    def send(self, seq_lines: list[tuple[int, bytes]]) -> None:
        """Write lines committed to the outbox (raises BrokenPipeError when the reader of stdout has gone)."""
        if not seq_lines:
            return
        if not self.writer.output.null:
            self.write([line for _, line in seq_lines], [seq for seq, _ in seq_lines])
        self.last = seq_lines[-1][0]
        self.log.append((time.monotonic(), self.last))

    # -- replays -------------------------------------------------------------------------

    def _outbox(self, after: int) -> Iterable[tuple[int, bytes]]:
        """Outbox lines (and their seqs) after ``after``, tagged for the readers the replay is for."""
        tag = self.replays.tag
        for seq, line in self.state.outbox_after(after):
            if tag:
                try:
                    ev = E.decode(line)
                except E.EventError:  # written by an older version that took more: the reader refuses it
                    yield seq, line
                    continue
                ev["hop"]["for"] = tag
                line = E.encode(ev)
            yield seq, line

    def replay(self, after: int | None = None) -> None:
        """Re-send the outbox after ``after``; by default (at start) after what each reader acknowledged, or, with
        no File Conveyor reader, what was never written."""
        start = after is None
        if after is None:
            due = self.replays.due()
            after = max(self.state.written, self.last) if due is None else due
        batch: list[tuple[int, bytes]] = []
        n = 0
        for seq_line in self._outbox(after):
            batch.append(seq_line)
            if len(batch) >= REPLAY_BATCH:
                self.write([line for _, line in batch], [seq for seq, _ in batch])
                n += len(batch)
                batch = []
        self.write([line for _, line in batch], [seq for seq, _ in batch])
        n += len(batch)
        if n:
            self.rep.info(f"re-sent {n} line(s) a reader may not have (after line {after})")
            last = self.state.next_seq - 1
            for k in acks.gone_behind(self.db, self.epoch, last) if start else ():
                self.rep.warn(acks.gone_warning(self.rep.prog, self.state.path, k, last))
            self.last = max(self.last, self.state.next_seq - 1)
            with self.state.transaction() as db:
                self.state.mark_written(db, self.delivered())

    def check_readers(self) -> None:
        """A reader is new or restarted while we run: re-send what it had not acknowledged.  Not once our output
        is closed (close_early): as for a writer that has exited, the reader takes what it holds at its end."""
        if self._watch is not None:
            return
        after = self.replays.due()
        if after is not None:
            self.replay(after)

    # -- how far the output is taken --------------------------------------------------------

    def settle(self, timeout: float) -> str:
        """The end, with no File Conveyor reader: wait until the reader of our stdout pipe has read what we
        wrote, or has gone (delivery/pipe_tail.py); "fc" when a File Conveyor reader showed up meanwhile."""
        got = self.wait_read(timeout, self.should_stop)
        if got == "gone":
            self.rep.info(
                "the reader of our output closed it before the end (head, a stage that failed?): "
                "this run's output is re-sent next run"
            )
        elif got == "timeout":
            self.rep.info("the reader of our output did not read all of it; the rest is re-sent next run")
        with self.state.transaction() as db:
            self.state.mark_written(db, self.delivered(), rewind=got == "gone")
        return got

    def behind(self) -> tuple[list[str], bool]:
        """File Conveyor readers that have not acknowledged all we wrote (we wait for them before exiting,
        re-sending if one restarts, so that a reader killed after our input ended still gets everything), and
        whether they moved on since the last look (a higher mark, an acknowledgement written again: it finished
        something; or one fewer behind): progress, however slowly it goes."""
        last = self.state.next_seq - 1
        (version,) = self.db.execute("PRAGMA data_version").fetchone()  # changes when another process writes
        if (version, last) == self._data_version:
            return list(self._behind), False
        self._data_version = version, last
        # only readers heard from during this run: one that read from us last week and is gone must not hold up
        # today's run
        acks = behind(self.db, self.epoch, self.started, last)
        moved = any(now > self._behind.get(r, now) for r, now in acks.items()) or acks.keys() < self._behind.keys()
        self._behind = acks
        return list(acks), moved

    def reader_gone(self) -> bool:
        """stdout is a pipe whose reader has exited (a FIFO given with --output waits for the next); once we have
        closed it (close_early): every reader that owed us acknowledgements has exited."""
        if self._watch is not None:
            if not self._watch:
                return True
            poller = select.poll()
            for fd in self._watch:
                poller.register(fd, select.POLLIN)  # a pidfd is readable once its process has exited
            return len(poller.poll(0)) == len(self._watch)
        out = self.writer.output
        return out.path is None and out.reader_gone()

    def close_early(self, behind: list[str]) -> bool:
        """At our end, before waiting for the acknowledgements of our File Conveyor readers ``behind`` (their
        state files): let go of a stdout that is an anonymous pipe, so that its reader sees the end of our output
        now and acknowledges at its end, instead of after its input has been quiet for a while
        (runner.IDLE_ACK_QUIET), each hop of a pipeline in turn.  Such a pipe has no next reader to re-send to (a
        named FIFO has: kept open, as is a pipe whose lines go on into a named FIFO, through fc-tee say).  A reader
        that dies before acknowledging is seen by its process's exit (a pidfd on each process that reads our pipe,
        or the pipes after it, and has a reader's state file open: a pass-through like awk ends at our end while
        the stage after it still works, and the shell reading the last stage's output does not acknowledge), and
        costs what it did before: exit 141, the rest re-sent next run.  Before letting go, says where our lines
        went on (runs.ending: the readers may be gone by the time the state file closes).  False: kept open (one
        of ``behind`` not found reading our lines, a process we may not watch)."""
        if self._watch is not None:
            return True
        out = self.writer.output
        fd = out.fd
        if out.path is not None or fd is None or not behind or not hasattr(os, "pidfd_open"):
            return False
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                return False
            st = os.fstat(fd)
        except OSError:
            return False
        after, owners = ack_check.chain((st.st_dev, st.st_ino), behind)
        if any(dev != st.st_dev for dev, _ in after):  # a named FIFO after us: its reader may be re-sent to
            return False
        if any(not owners.get(reader) for reader in behind):  # a reader we cannot see: wait as before
            return False
        watch: list[int] = []
        for pid in set().union(*owners.values()):
            try:
                watch.append(os.pidfd_open(pid))
            except ProcessLookupError:
                continue  # already gone
            except OSError:  # cannot watch it: wait as before, holding the pipe
                for pidfd in watch:
                    os.close(pidfd)
                return False
        try:
            self.state.end_output(after)
        except sqlite3.Error:
            for pidfd in watch:
                os.close(pidfd)
            return False
        out.release()  # a write from now on raises BrokenPipeError (what is committed is re-sent next run)
        self._watch = watch
        return True

    def release(self) -> None:
        """At our exit, after our last line and acknowledgement: let go of a stdout pipe now (Output.release),
        once we have said where our lines went on (runs.ending), rather than after the state file is closed
        and the interpreter has finished: the next stage sees its end ~20 ms sooner, at every hop."""
        out = self.writer.output
        if self._watch is not None or out.path is not None or out.fd is None:
            return
        with contextlib.suppress(sqlite3.Error, OSError):
            self.state.end_output()
        out.release()

    def close(self) -> None:
        if self._watch is not None:
            for pidfd in self._watch:
                with contextlib.suppress(OSError):
                    os.close(pidfd)
            self._watch = []
        self.writer.close()
