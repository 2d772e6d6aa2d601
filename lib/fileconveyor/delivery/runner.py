"""The loop every fc stage after fc-watch runs: read, commit, work, commit, write.

A stage (fc-filter, fc-process, fc-transport, fc-record, or a plugin) only says
what to do with one event (``Stage.work``); the runner does the rest, the same way
for every stage:

- reads lines (stdin, a file or a FIFO) on a thread, decodes them, reports bad ones;
- drops replays already taken (``hop`` high-water marks, see delivery/durable.py);
- splits each event into work items, each on a *lane* (a destination, say) with a
  *key* (its path): items with the same lane and key run one at a time, in order;
  everything else runs concurrently, up to each lane's number of workers;
- commits items to the inbox before working on them and their output to the
  outbox before writing it, so a kill -9 anywhere loses nothing (the commit of a
  round, and its redo item by item, are delivery/commit.py's);
- retries: an item's ``Retry`` outcome keeps it (durably) until its time comes;
  a lane-wide retry (a server down) pauses the whole lane with exponential back-off
  and jitter, then probes with one item, so a down server causes no retry storm
  and never holds up other lanes;
- stages whose work is quick and local (no workers) run it inline: an event that
  is finished at once goes straight to the outbox, in the same transaction that
  takes it, so a pass-through costs one commit per batch of lines; a stage with
  workers may do the same for items cheaper to work than to hand off (a small
  local copy: Stage.quick_works), after a commit of how far its lines go, so that
  a kill before the round's commit redoes them looking first (Intake.begin_work);
- a lane hands out items well ahead of its workers (lanes.AHEAD_MIN), so its
  workers never wait for the main thread between two items, and a round with
  workers gathers results while others run (ROUND_ITEMS, ROUND_WAIT): one commit
  serves hundreds of small files, and a lone event is committed at once;
- a stage's own threads (delayed deletions, CDN invalidations) write events through
  ``emit`` (outbox first, like any output) and make the end of the input wait for
  their work through ``add_timed``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from .. import backoff
from .. import events as E
from ..errors import Exit
from ..report import Progress, Reporter
from ..stopping import Stopper
from . import ack_check, collector
from .commit import Commit, Emitted
from .durable import ACK_INTERVAL, StageState
from .inbox import Inbox
from .intake import Intake
from .lanes import Scheduler, Workers
from .options import Counters, Options
from .sending import Sending
from .stage import Also, Done, Item, Outcome, Retry, Stage, StageContext, Timed
from .timed import TimedWaits

__all__ = [  # what the runner's users import from here, as before the split
    "Done",
    "Item",
    "Options",
    "Outcome",
    "Retry",
    "Runner",
    "Stage",
    "StageContext",
    "Timed",
    "run_stage",
]

BATCH = 2000  # lines taken per round
# A round with workers gathers results while more items are in flight: it commits once ROUND_ITEMS are in, or
# ROUND_WAIT after the first, or at once when nothing more is running (a lone event is not held back).  One
# commit then serves hundreds of small files, not the ten that finished within a few milliseconds (3 ms before).
ROUND_ITEMS = 256
ROUND_WAIT = 0.025
POLL = 0.002  # seconds between looks for more results while gathering: a wake-up per result cost more
PRUNE_INTERVAL = 5.0
REFRESH_INTERVAL = 1.0  # seconds between acknowledgements written again while we make progress
SESSION_CHECK = 0.5  # seconds between looks for restarted readers
RELEASE_GRACE = 3600.0  # seconds after which written lines no reader acknowledged are released
# A stage with nothing left to do acknowledges what it took at once, not at its next ACK_INTERVAL: a writer at the
# end of its input waits for that before it exits, and each hop of a pipeline waited up to a second for it.
# At the end of its input (a writer into a pipe closes it before it waits: Sending.close_early), or once its
# input has been quiet this long: a live stream of files keeps the ACK_INTERVAL pace (each
# acknowledgement is a write into the writer's state file, which the writer's own commits wait for).
IDLE_ACK_QUIET = 0.1
# A stage whose input ended, waiting for its readers' acknowledgements: looks again every END_POLL seconds for
# END_POLL_FAST seconds after its end or its last progress, then at twice the interval each time, up to END_POLL_MAX
# (PRAGMA data_version first: one cheap read when nothing moved).  An acknowledgement comes within a few tens of ms
# of our end, or 0.1 s after it from a reader whose input a wrapper holds open (IDLE_ACK_QUIET): doubling from the
# start, the looks at 10, 30, 70 and 150 ms saw it up to half the wait late (50 ms at 0.1 s), each run.
END_POLL, END_POLL_FAST, END_POLL_MAX = 0.005, 0.25, 0.1


# -- the runner ------------------------------------------------------------------------


class Runner:
    def __init__(self, stage: Stage, opts: Options, stdin: IO[bytes], stdout: IO[bytes], rep: Reporter, stop: Stopper):
        self.stage = stage
        self.opts = opts
        self.stdin = stdin
        self.stdout = stdout
        self.rep = rep
        self.stop = stop
        self.counts = Counters()
        out = ack_check.output_ident(opts.output, stdout)  # our readers may ask our state file (runs.current)
        self.state = StageState(opts.state_path, stage.migrations, name=stage.name, out=out)
        self.state.effects.on_error = self._effect_failed
        self.sched = Scheduler(stage.lanes())
        self.inline = all(n == 0 for n in stage.lanes().values())
        self._workers = sum(stage.lanes().values())
        self.input = Intake(stage, opts, stdin, self.state, self.counts, rep, stop)  # our writers, our input
        self.output = Sending(self.state, opts.output, stdout, rep, lambda: self.stop.requested)  # our readers
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.workers = Workers(self.sched, self._work, self.events.put, rep)
        self.inbox = Inbox(self.state, self.sched, self.input, self.counts, rep)
        self.commit = Commit(self.state, stage, self.inbox, self.input, self.output, self.counts, rep)
        self._eof = False
        self._closed = False
        self._let_go = False  # our stdout pipe closed ahead of our readers' last acknowledgements (close_early)
        self._eof_at = 0.0
        # the last progress (an item done, a reader acknowledging more): --drain-timeout counts from here, so
        # a long but moving end (minutes of YUI downstream) is not reported as "try again later"
        self._progress_at = 0.0
        self._refreshed_at = 0.0
        self._next_refresh = 0.0
        self._next_prune = 0.0
        self._next_sessions = 0.0
        self._next_ack = 0.0
        # emit(): while the loop runs, events go through self.events and the loop commits them; after it, the
        # caller commits them itself, under this lock (worker and timed threads may still emit then)
        self._emit_lock = threading.Lock()
        self._looping = False
        self.timed = TimedWaits(rep, self.state.path, stage.name)  # the stage's own timed work (add_timed)
        self.progress = Progress(rep, opts.progress)
        self._line_at = 0.0  # when the last input line came (IDLE_ACK_QUIET)
        self._wake_at: float | None = None  # the loop looks again by then (an idle acknowledgement is due)
        self._end_poll = END_POLL  # at the end: how soon to look for our readers' acknowledgements again
        self._result_at = 0.0  # when the last result was taken (_gather)

    # -- set-up ----------------------------------------------------------------------

    def emit(self, outputs: Sequence[dict], also: Also | None = None) -> None:
        """Write events no input item produced (an old name deleted later, say): they are committed to the
        outbox, together with what ``also`` writes in the same transaction, before they are written, like any
        output.  Callable from any thread: while the loop runs, it commits and writes them in its next round;
        once it has ended (from Stage.close, or a stage's thread still finishing), they are committed and written
        at once.  ``emit([], also)`` just commits ``also``."""
        with self._emit_lock:
            if self._looping:
                self.events.put(("emit", (list(outputs), also)))
                return
            self._commit_emitted([(list(outputs), also)])

    def _effect_failed(self, exc: BaseException) -> None:
        """A stage's after_commit or on_rollback raised: a bug of the stage, said; the commit stands."""
        self.rep.error(f"{self.stage.name}: unexpected failure after a commit: {exc}")
        import traceback  # only on a failure: not a cost of every start

        self.rep.debug("".join(traceback.format_exception(exc)))

    def _context(self) -> StageContext:
        """What the stage may ask of us (delivery/stage.py), and no more."""
        return StageContext(
            rep=self.rep,
            state_path=self.state.path,
            db=self.state.db,
            transaction=self.state.transaction,
            readers=self.state.readers,
            throughs=self.state.throughs,
            emit=self.emit,
            enqueue=self.inbox.enqueue,
            enqueue_in=self.inbox.enqueue_in,
            add_timed=self.timed.add,
            after_commit=self.state.effects.after_commit,
            on_rollback=self.state.effects.on_rollback,
        )

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        if not self.output.open():
            return Exit.OK  # stopped while waiting for a reader
        self.output.replay()
        self.inbox.load()
        self.stage.start(self._context())  # after the inbox is loaded: what it enqueues is queued once
        collector.for_rounds()  # (collector.py: fewer collections, start-up's objects out of their walk)
        self.workers.start()
        # Tell every writer we know that a new process of ours reads now: lines the
        # previous one held in memory died with it, and the writer re-sends them;
        # until that replay begins, what comes from the writer is held.
        self.input.open_input()  # before: a replay that comes while our FIFO is not open could be dropped
        self.input.register()
        reader = threading.Thread(target=self.input.read, args=(self.events.put,), name="input", daemon=True)
        reader.start()
        self._looping = True
        try:
            status = self._loop()
        finally:
            self.workers.stop(self.stop.requested)
            self._commit_late_results()
            self._end_loop()
            if self.stop.requested and self.output.must_settle():
                # a clean stop: the reader of our pipe gets a moment to read what is in it (pipe_tail.STOP_WAIT)
                with contextlib.suppress(Exception):
                    self.output.settle(self.opts.drain_timeout)
            self.input.acknowledge(force=True)
            self.input.acks.close()
            with contextlib.suppress(Exception):  # a full disk: the next run looks first at a few more lines
                self.input.end_work()
            self.stage.close()
            self.progress.done(self._progress_text())
            with self._emit_lock:  # a stage's thread that outlived close() must not find a closed database
                if self.output.delivered() != self.state.written:
                    with contextlib.suppress(Exception), self.state.transaction() as db:
                        self.state.mark_written(db, self.output.delivered(), rewind=self.output.tail.quit_early)
                self.output.release()  # our reader sees our end now, not after the file is closed and we exited
                self.state.close()
                self.output.close()
                self._closed = True
        return status

    def _queued(self, kind: str) -> list[Any]:
        """Take the payloads of the queued messages of ``kind``; the others stay queued, in their order."""
        taken, other = [], []
        while True:
            try:
                msg = self.events.get_nowait()
            except queue.Empty:
                break
            (taken if msg[0] == kind else other).append(msg)
        for msg in other:
            self.events.put(msg)
        return [payload for _, payload in taken]

    def _commit_late_results(self) -> None:
        """Results that came in after the loop stopped (a stop request: items in progress get a grace period):
        committed and written now, so that work done is not done again by the next run."""
        done = self._queued("done")
        if done:
            with contextlib.suppress(BrokenPipeError):  # a reader gone: the outbox re-sends them next run
                self._round([], done)

    def _end_loop(self) -> None:
        """From now on emit() commits by itself; what was emitted and not yet taken by the loop goes now.  Lines
        nobody takes any more stay queued: their items are in the inbox for the next run."""
        with self._emit_lock:
            self._looping = False
            emitted = self._queued("emit")
            if emitted:
                self._commit_emitted(emitted)

    def _commit_emitted(self, emitted: Emitted) -> None:
        """After the loop: commit and write what emit() was given.  Called with _emit_lock held."""
        if self._closed:
            self.rep.warn(f"{sum(len(o) for o, _ in emitted)} event(s) came after the state file was closed: lost")
            return
        try:
            lines = self.commit.emitted(emitted)
        except Exception as exc:  # a full disk: nothing was committed, and the stage redoes that work next run
            self.rep.warn(f"could not record {sum(len(o) for o, _ in emitted)} event(s) of our own: {exc}")
            return
        if not lines:
            return
        try:
            self.output.send(lines)
        except OSError as exc:
            self.rep.info(f"{len(lines)} event(s) not written ({exc}); they are in the outbox, re-sent next run")
            return
        self.counts.written += len(lines)

    def _loop(self) -> int:
        while True:
            if self.stop.requested:
                return Exit.OK  # the caller turns the signal into 128+n; the inbox keeps the rest
            timeout = self.sched.next_due()
            # draining timed work: look again soon (a deletion of an old name that was in use again emits nothing)
            longest = 0.2 if self.timed.hurried else 1.0
            if self._eof and self.sched.count == 0:
                longest = min(longest, self._end_poll)  # waiting for our readers: see END_POLL
            if self._wake_at is not None:
                longest = max(0.001, min(longest, self._wake_at - time.monotonic()))
            timeout = longest if timeout is None else min(timeout + 0.001, longest)
            lines: list[bytes] = []
            done: list[tuple[Item, Outcome]] = []
            emitted: Emitted = []
            try:
                msgs = [self.events.get(timeout=timeout)]
            except queue.Empty:
                msgs = []
            n = len(msgs[0][1]) if msgs and msgs[0][0] == "lines" else 0
            while len(msgs) < BATCH and n < BATCH:  # lines come in batches: BATCH lines, or messages, a round
                try:
                    msg = self.events.get_nowait()
                except queue.Empty:
                    break
                msgs.append(msg)
                if msg[0] == "lines":
                    n += len(msg[1])
            if not self.inline and any(kind == "done" for kind, _ in msgs):
                self._gather(msgs)
            if msgs and self._eof and self.sched.count == 0:
                self._end_poll = END_POLL  # an emit, a late result: look again soon
            for kind, payload in msgs:
                if kind == "lines":
                    self._line_at = time.monotonic()
                    lines.extend(payload)
                elif kind == "done":
                    done.append(payload)
                elif kind == "back":
                    self.sched.put_back(payload)
                elif kind == "emit":
                    emitted.append(payload)
                elif kind == "writer":  # our input FIFO's writers all went: lines between may be lost
                    self.input.renew(lines_coming=payload)
                elif kind == "eof":
                    self._eof = True
                    self._eof_at = time.monotonic()
                elif kind == "error":
                    self.rep.error(payload)
                    self._eof = True
                    self._eof_at = time.monotonic()
            self.input.taken += len(lines)
            self._round(lines, done, emitted)
            released = self.input.held_back(at_end=self._eof)
            if released:
                self._round(released, [])
            if self.sched.count < self.opts.max_queue and not self.sched.enough():
                self.input.room.set()
            else:
                self.input.room.clear()
            self.progress.update(self._progress_text)
            if self._eof and self.sched.count == 0:
                timed = self.timed.left(self.opts.drain_timeout, self._eof_at)
                if timed is not None:
                    if timed:
                        continue  # timed work due within the drain time: wait for it
                    return Exit.RETRY
                if not self.events.empty():
                    # timed work's line (an old name deleted: its event) put after this round took its messages,
                    # and before that work said it was done: written once our output is let go, it was exit 141
                    continue
                behind, moved = self.output.behind()
                self._end_looked(moved)
                if not behind:
                    if self.output.must_settle():
                        settled = self.output.settle(self.opts.drain_timeout)
                        if settled == "fc":
                            self._progress_at = time.monotonic()  # a reader showed up: wait for its acknowledgements
                            continue
                        if settled == "gone":
                            return Exit.BROKEN_PIPE
                    return self._status()
                if not self._let_go and self.output.close_early(behind):
                    # our readers see our end now, not after their input was quiet (IDLE_ACK_QUIET), hop by hop
                    self._let_go = True
                    self._end_poll = END_POLL
                if self.output.reader_gone():
                    self.rep.info("the reader of our output went away; what it missed is re-sent next run")
                    return Exit.BROKEN_PIPE
                if self._idle() > self.opts.drain_timeout:
                    self.rep.warn(
                        f"{', '.join(behind)} did not acknowledge all our output for {self.opts.drain_timeout:g} s "
                        f"(--drain-timeout); it stays in "
                        f"{self.state.path} and is re-sent when {self.stage.name} runs again"
                    )
                    return Exit.RETRY
            if self._eof and self.sched.only_waiting() and self._idle() > self.opts.drain_timeout:
                self.rep.warn(
                    f"{self.sched.count} item(s) still waiting to be retried, none done for "
                    f"{self.opts.drain_timeout:g} s (--drain-timeout); they stay queued in "
                    f"{self.state.path} and are retried when {self.stage.name} runs again"
                )
                return Exit.RETRY

    def _gather(self, msgs: list[tuple[str, Any]]) -> None:
        """Results came in: while more items are running, gather theirs too before the round commits (ROUND_ITEMS,
        ROUND_WAIT).  The round goes at once when nothing more is in flight, or when a line comes that an idle
        worker could start: live events are not held back.  Looked for every POLL seconds instead of waiting on
        the queue: a wake-up of this thread per result cost more than the commits it saved.

        Not for a lone result when the one before came more than ROUND_WAIT ago: items slower than that
        (fc-process --jobs 1 and a 50 ms tool) have their next one queued in the lane, which counts as running,
        and each result waited the whole ROUND_WAIT for company that came after it, polling meanwhile."""
        now = time.monotonic()
        done = sum(kind == "done" for kind, _ in msgs)
        back = sum(kind == "back" for kind, _ in msgs)
        line = any(kind == "lines" for kind, _ in msgs)
        last, self._result_at = self._result_at, now
        if done == 1 and now - last > ROUND_WAIT:
            return
        deadline = now + ROUND_WAIT
        while len(msgs) < BATCH:
            running = self.sched.running() - done - back
            if running <= 0 or done >= ROUND_ITEMS or (line and running < self._workers):
                return
            try:
                msg = self.events.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(POLL, left))
                continue
            msgs.append(msg)
            if msg[0] == "done":
                done += 1
                self._result_at = time.monotonic()
            back += msg[0] == "back"
            line = line or msg[0] == "lines"

    def _end_looked(self, moved: bool) -> None:
        """At our end, after a look at our readers' acknowledgements (``moved``: they acknowledged more): when to
        look again (END_POLL)."""
        if moved:
            self._progress_at = time.monotonic()
        if self._idle() < END_POLL_FAST:
            self._end_poll = END_POLL
        else:
            self._end_poll = min(END_POLL_MAX, self._end_poll * 2)

    def _idle(self) -> float:
        """Seconds since the input ended or, later, since the last progress."""
        return time.monotonic() - max(self._eof_at, self._progress_at)

    def _status(self) -> int:
        c = self.counts
        return Exit.EVENTS_FAILED if c.failed or c.bad or c.quarantined else Exit.OK

    def _round(
        self,
        lines: list[bytes],
        done: list[tuple[Item, Outcome]],
        emitted: Emitted | None = None,
    ) -> None:
        new = self.input.take(lines)
        to_insert: list[Item] = new
        if self.inline:
            # Work what can be worked now, before the commit: an item finished at once
            # never needs an inbox row, only its outputs in the outbox.
            to_insert = []
            for item in new:
                if self.sched.blocked(item.lane, item.key):
                    self.sched.add(item)  # behind an earlier item of its path
                    to_insert.append(item)
                    continue
                outcome = self._work(item)
                if isinstance(outcome, Retry):
                    self.sched.add_running(item)  # later items of its path now wait for it
                done.append((item, outcome))
            for item in list(self.sched.due(time.time())):
                done.append((item, self._work(item)))
        else:
            # Pass-throughs are finished here, in the batch's own commit, instead of
            # a round trip through a worker and a commit of their own.
            to_insert = []
            if new and self.stage.quick_works:
                self.input.begin_work(new)  # quick() may copy files before this round's commit
            for item in new:
                if not self.sched.blocked(item.lane, item.key):
                    outcome = self._quick(item)
                    if outcome is not None:
                        done.append((item, outcome))
                        continue
                self.sched.add(item)  # now: a later item of its path in this batch waits for it
                to_insert.append(item)
        self._flush(done)
        seq_lines = self.commit.round(bool(lines), done, to_insert, emitted or [])
        for it in self.inbox.enqueued:
            self.sched.add(it)
        self.inbox.enqueued.clear()
        if done and self._after(done):
            self._progress_at = time.monotonic()
        self.output.send(seq_lines)
        self.counts.written += len(seq_lines)
        self._housekeeping(bool(seq_lines))
        if not self.inline:
            for item in self.sched.due(time.time()):
                self.sched.lanes[item.lane].tasks.put(item)

    def _flush(self, done: list[tuple[Item, Outcome]]) -> None:
        """The stage's own writes of this round made durable (Stage.flush), or its finished items retried."""
        reason = self.stage.flush()
        if reason is None:
            return
        for i, (item, outcome) in enumerate(done):
            if isinstance(outcome, Done):
                done[i] = (item, Retry(reason, after=backoff.delay(item.attempts, 2.0, 60.0)))
                if not self.sched.head(item):
                    self.sched.add_running(item)  # finished at once: now it holds its key until retried

    # -- working -----------------------------------------------------------------------

    def _work(self, item: Item) -> Outcome:
        try:
            return self.stage.work(item)
        except Exception as exc:  # a bug in a stage must not kill the stage: the event fails
            self.rep.error(f"{E.display(E.get_path(item.event, 'path'))}: unexpected failure: {exc}")
            import traceback  # only on a failure: not a cost of every start

            self.rep.debug(traceback.format_exc())
            return Done([{**item.event, "error": f"internal error: {exc}", "error_kind": "internal"}], failed=True)

    def _quick(self, item: Item) -> Done | None:
        try:
            return self.stage.quick(item)
        except Exception:
            import traceback  # only on a failure: not a cost of every start

            self.rep.debug(traceback.format_exc())
            return None  # let the worker try, and fail the event properly if it must

    # -- after the commit --------------------------------------------------------------

    def _after(self, done: list[tuple[Item, Outcome]]) -> bool:
        """After the commit: each item finished or to be retried; whether one finished (progress).  Per round:
        an item finished at once (inline, or quick) never joined the scheduler's keys, looked up only when
        some are held."""
        release = self.input.release
        sched = self.sched
        progress = False
        for item, outcome in done:
            if outcome.__class__ is Retry:
                self._retry(item, outcome)  # type: ignore[arg-type]
                continue
            progress = True
            release(item)
            if sched.keys and sched.head(item):
                sched.finished(item)
        return progress

    def _retry(self, item: Item, outcome: Retry) -> None:
        lane = self.sched.lanes[item.lane]
        was_paused = lane.paused_until > time.monotonic()
        delay = self.sched.retry(item, outcome)
        if outcome.lane and not was_paused:
            # a destination down, a disk full: people need to know, once per pause
            where = f"{item.lane}: " if item.lane else ""
            self.rep.warn(f"{where}{outcome.reason}; pausing, next try in {delay:.1f}s (work stays queued)")
        else:
            self.rep.info(f"{E.display(E.get_path(item.event, 'path'))}: {outcome.reason}; retry in {delay:.1f}s")

    def _housekeeping(self, wrote: bool) -> None:
        now = time.monotonic()
        self._wake_at = None
        if now >= self._next_ack:  # computing the marks costs: not on every round
            self._next_ack = now + ACK_INTERVAL
            self.input.acknowledge()
        # (after the acknowledgement just above too: it may not have been written, a writer's last one being
        # younger than ACK_INTERVAL, and with no wake-up set the loop slept its full second with a writer
        # waiting for this: 1.2 s at the end of one pipeline run in four)
        if self.sched.count == 0 and self.input.unacknowledged():
            # all done and the input ended, or quiet for a while: a writer may be waiting for this
            if self._eof or now - self._line_at >= IDLE_ACK_QUIET:
                self._next_ack = now + ACK_INTERVAL
                self.input.acknowledge(force=True)
            else:
                self._wake_at = self._line_at + IDLE_ACK_QUIET
        if now >= self._next_prune and self.output.delivered() > self.state.written:
            with self.state.transaction() as db:
                self.state.mark_written(db, self.output.delivered())
        if now >= self._next_sessions:
            self._next_sessions = now + SESSION_CHECK
            self.output.check_readers()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            with contextlib.suppress(Exception):
                floor, dropped = self.state.prune()
                if floor is None:
                    # no File Conveyor reader has said what it holds: release what was
                    # written long ago (a reader that never acknowledges, like jq)
                    log = self.output.log
                    while log and log[0][0] < now - RELEASE_GRACE:
                        floor = min(log.popleft()[1], self.state.written)
                if floor:
                    self.stage.released(floor)
                if dropped:
                    self.rep.warn_once(
                        "unacked",
                        "no File Conveyor stage is acknowledging this output; old lines are no longer kept for replay",
                    )
        if now >= self._next_refresh:
            # Our acknowledgements are written again, with a fresh time, while we work (an item running or
            # done) or have nothing left: a writer waiting for us at its end takes that for progress
            # (--drain-timeout) even while the mark cannot move (YUI on the first file for minutes, items
            # finishing out of order); with only retries left to wait for, we leave the time alone, and the
            # writer gives up after its drain timeout.
            self._next_refresh = now + REFRESH_INTERVAL
            if self._progress_at > self._refreshed_at or self.sched.count == 0 or not self.sched.only_waiting():
                self._refreshed_at = now
                self.input.acknowledge(force=True)

    def _progress_text(self) -> str:
        c = self.counts
        extra = self.stage.progress()
        return (
            f"{c.read} read, {c.written} written, {self.sched.count} queued"
            + (f", {c.failed} failed" if c.failed else "")
            + (f", {c.retries} retries" if c.retries else "")
            + (f", {extra}" if extra else "")
        )


def run_stage(stage: Stage, opts: Options, stdin: IO[bytes], stdout: IO[bytes], rep: Reporter, stop: Stopper) -> int:
    runner = Runner(stage, opts, stdin, stdout, rep, stop)
    return runner.run()
