"""The reading side of a hop: lines in, checked, turned into work items.

- reads lines (stdin, a file or a FIFO) on a thread, and stops reading while the runner has too much queued;
- decodes each line; a bad one is reported with its line number and skipped (a whole line glued to the torn
  start of one is taken, the torn start reported: events.unglue);
- drops replays already taken (``hop`` high-water marks per writer, see delivery/durable.py), refuses a
  ``hop.seq`` past what its writer wrote (a forged line), and holds a writer's lines while it re-sends what a
  previous process of ours may have read and lost (``Holding``);
- marks as ``recovered`` the items of lines a killed process of ours may have worked on before it could commit
  them (``begin_work``: a stage that works items at once, Stage.quick_works), so the stage looks before redoing;
- splits each event into work items (``Stage.split``) and remembers which writer seqs are still unfinished,
  so that acknowledgements (``Acknowledger``, written into the writer's state file) never pass them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from .. import events as E
from .. import private
from . import ack_check
from .durable import FIRST_CONTACT_WINDOW, Acknowledger, Holding, Hop, StageState
from .options import Counters, Options
from .stage import Item, Stage
from .streams import LongLine, has_fd, input_batches, is_fifo, named_fifo, open_fifo
from .through import Through

if TYPE_CHECKING:
    from ..report import Reporter
    from ..stopping import Stopper

_BLANK = frozenset(b" \t\r\n\f\v")  # a line's first byte that may begin a blank line
# A writer whose state file tells nothing (not here, or of another epoch now): a hop.seq this far past where it was
# last looked at is looked at again.  A writer's that does is read for a seq past the highest it said it had, but the
# next one after our mark (Intake._past).
SEQ_JUMP = 10_000
# Lines read and not yet taken by the runner's loop from which reading waits: while that loop writes to a slow
# reader of ours, the lines of a fast writer would otherwise pile up in memory (about 0.5 KB each).
LINES_AHEAD = 512
# begin_work: the mark goes this many seqs beyond the round's last line, so that the rounds after it need no
# transaction of their own until their lines pass it (a live stream: one per 1,024 lines, not one per line).
# After a kill, up to that many lines that no process of ours had taken are looked at first too: a look at the
# destination each, never a file lost or sent twice.
WORKING_AHEAD = 1024


class Intake:
    def __init__(
        self,
        stage: Stage,
        opts: Options,
        stdin: IO[bytes],
        state: StageState,
        counts: Counters,
        rep: Reporter,
        stop: Stopper,
    ):
        self.stage = stage
        self.opts = opts
        self.stdin = stdin
        self.counts = counts
        self.rep = rep
        self.stop = stop
        self.state = state
        self.marks = state.load_upstream()
        self.through = Through(state)  # how far each writer's lines are done by the stages after us too
        # per writer, how far our lines' work may have begun before their commit (begin_work): as the last
        # process left it (lines up to there that come again may be done already), and as stored now
        self.was_working = state.load_working()
        self.working = dict(self.was_working)
        # seqs of events we hold unfinished, per writer: we acknowledge only below them,
        # so a writer keeps (and fc-process keeps the work files of) what we still need
        self.held: dict[tuple[str, str], dict[int, int]] = {}
        self._met: set[str] = set()  # writers whose first line this process has seen
        self.acks = Acknowledger(
            state.origin,
            lambda key, text: rep.warn_once(key, text),
            self._input_ident(),
            rep.info,
            vouched=self._input_vouched(),
            met=self._met,  # (a writer our state knows whose lines do not come is no forgery: Acknowledger)
        )
        self.holding = Holding(self.acks.session)  # our writers' replays
        # writers whose lines we took without their replay (our acknowledgements to them failed all through the
        # hold): the mark we had then, which we acknowledge and store until one gets through (see register)
        self.unreplayed: dict[str, tuple[str, int]] = {}
        self.room = threading.Event()  # cleared while the runner has too much queued: reading waits
        self.room.set()
        self.order = itertools.count()
        self.lineno = 0
        # lines the reading thread posted, and lines the loop took out of its queue (each counter written by one
        # thread only): reading waits while LINES_AHEAD are in between
        self.posted = 0
        self.taken = 0
        # (writer, epoch) -> the highest seq its state file said it had committed (_past): a line up to there is
        # taken without a look; one past it makes us look again, and is refused if it is past that too
        self._limits: dict[tuple[str, str], int] = {}
        self._one_item = type(stage).split is Stage.split  # take() makes its item itself
        self._fifo_fd: int | None = None  # our input FIFO, opened before we register (open_input)
        # we asked our writers again as the lines of our FIFO's next writer began to come (renew): a resend line
        # that is the first of them asks for nothing more (reset once a round of lines is taken)
        self._asked_as_lines_came = False
        # only a named FIFO's writers are replaced while we read on (a pipe's writer that goes is our input's end):
        # one named with --input, or our stdin (`< x.fifo`)
        if self.opts.input not in (None, "-"):
            self._fifo_input = is_fifo(self.opts.input)
        else:
            self._fifo_input = has_fd(stdin) and named_fifo(stdin.fileno())

    def _input_ident(self) -> ack_check.Ident | None:
        """Our input when it is a pipe or FIFO: acknowledgements go only to writers at its other end.  None for
        a FIFO another user may write (ack_check.others_may_write): as a file of saved events others may write,
        nothing is acknowledged to the writers its lines name."""
        if self.opts.input in (None, "-"):
            fd = self.stdin.fileno() if has_fd(self.stdin) else None
            if fd is None:
                return None
            if ack_check.others_may_write(fd=fd):
                self._shared_fifo("stdin")
                return None
            private.fifo_unreadable(fd=fd)  # a FIFO of ours others may read: see below
            return self._unless_others_read("stdin", ack_check.input_ident(fd=fd))
        if ack_check.others_may_write(path=self.opts.input):
            self._shared_fifo(self.opts.input)
            return None
        # A FIFO of ours that others may read: unreadable by them from now on, as its writer makes it (writer.py):
        # a line another user's process takes out of it is a gap we would acknowledge past (files never sent)
        private.fifo_unreadable(self.opts.input)
        return self._unless_others_read(self.opts.input, ack_check.input_ident(path=self.opts.input))

    def _unless_others_read(self, name: str, ident: ack_check.Ident | None) -> ack_check.Ident | None:
        """``ident``, or None when another user's process opened the FIFO for reading before it was made
        owner-only: what it takes out are gaps we would acknowledge past, so its writers get no acknowledgement
        (and re-send what this run took)."""
        theirs = ack_check.others_reading(ident) if ident is not None else []
        if theirs:
            pid, uid = theirs[0]
            self.rep.warn(
                f"our input {name} is a FIFO another user's process has open for reading (pid {pid}, uid {uid}): "
                "it can take lines out unseen, so its writers get no acknowledgement; stop that process, or make "
                "FIFOs owner-only from the start (mkfifo -m 600)"
            )
            return None
        return ident

    def _shared_fifo(self, name: str) -> None:
        self.rep.warn(
            f"our input {name} is a FIFO other users may write into: its writers get no acknowledgement (and "
            "re-send what this run took); make it owner-only (mkfifo -m 600)"
        )

    def _input_vouched(self) -> bool:
        """An in-memory stream from a library caller, or a regular file of ours others cannot write (ack_check)."""
        if self.opts.input in (None, "-"):
            return not has_fd(self.stdin) or ack_check.own_file(fd=self.stdin.fileno())
        return ack_check.own_file(path=self.opts.input)

    def read(self, post: Callable[[tuple[str, Any]], None]) -> None:
        """The reading thread: lines a batch at a time (what one read brought, in pieces of LINES_AHEAD / 8 at
        most), then the end (or an error), posted to the runner's loop as ("lines", [...]); waits while the runner
        has enough queued (``room``) or LINES_AHEAD lines are posted and not yet taken (``taken``).  A message per
        line cost more than deciding the line: the queue, the wake-ups and the GIL passed between the threads."""
        try:
            opened, self._fifo_fd = self._fifo_fd, None
            for batch in input_batches(
                self.opts.input,
                self.stdin,
                self.stop.fileno(),
                lambda: self.stop.requested,
                self.opts.max_line_bytes,
                on_reopen=lambda lines_coming: post(("writer", lines_coming)),
                opened=opened,
            ):
                piece = max(1, LINES_AHEAD // 8)
                for start in range(0, len(batch), piece):
                    lines = batch[start : start + piece] if len(batch) > piece else batch
                    while True:
                        if self.posted - self.taken >= LINES_AHEAD:
                            self.room.clear()  # the loop sets it again after its next round
                            if self.posted - self.taken < LINES_AHEAD:
                                self.room.set()
                        if self.room.wait(0.5):
                            break
                        if self.stop.requested:
                            return
                    self.posted += len(lines)  # (this thread's counter; ``taken`` is the loop's)
                    post(("lines", lines))
        except OSError as exc:
            post(("error", f"{self.opts.input or 'stdin'}: {exc.strerror or exc}"))
        post(("eof", None))

    def open_input(self) -> None:
        """An input FIFO named with --input is opened before we register (register): once our writers hear of
        this process they re-send what it lacks, and a writer between them and us that skips a FIFO without a
        reader (fc-tee) would drop that replay if the FIFO were not open yet; the first line that got through
        would then carry the replay's tag, and our mark would go past the dropped lines."""
        path = self.opts.input
        if path not in (None, "-") and is_fifo(path):
            self._fifo_fd = open_fifo(path)

    def register(self) -> None:
        """At start: tell every writer we know that a new process of ours reads now (the lines the previous one
        had read and not stored died with it: the writer re-sends them), and hold each one's lines until that
        replay begins, whether or not this first acknowledgement got through.  It can fail ("database is
        locked" after 0.5 s, a check that refuses, a writer on another host: warnings only); taking lines then
        would move our mark past the lost ones, and the replay our acknowledgement asks for once it gets through
        would start after them (fc-watch re-sends nothing else: its FIFO reopen re-sends from the
        acknowledgements it has).  The cost of holding: up to Holding.AWAIT_SECONDS at start for a writer our
        acknowledgements do not reach (a warning says so when that wait ends), instead of lines lost."""
        self.acknowledge(force=True)
        for origin in self.marks:
            self.holding.expect(origin)

    def renew(self, lines_coming: bool = False) -> None:
        """Every writer of our input FIFO went and the next will open it (``lines_coming``: its lines begin to
        come), or a resend line says a pass-through before us was replaced (resend): a restarted writer, or fc-tee
        or fc-filter killed between us and our writer, with lines it had read and not passed on, and more left in
        its own input pipe or skipped by fc-tee meanwhile, which our writer cannot know were lost (its reader did
        not change) and which are never re-sent otherwise, the first newer line moving our mark past them.  As at
        a restart: a new session, told to every writer we know (each re-sends what we did not acknowledge), their
        lines held until that replay."""
        self.acks.renew()
        self.holding.session = self.acks.session
        self.register()
        self._asked_as_lines_came = lines_coming

    def resend(self) -> None:
        """A resend line (events.RESEND): a pass-through between our writers and us (fc-tee, fc-filter) started
        and writes into our FIFO.  When we had lines of its predecessor left to read as it opened the FIFO, we
        never saw an end of input, so we ask here what renew asks then.  Not when we have just asked as this
        writer's lines began to come (it wrote this line first, having opened its own input: our ask's replay
        cannot have been skipped on the way), and not from a pipe, whose writer that goes ends our input.  A
        forged one costs a replay (duplicates, dropped by seq) and an acknowledgement written to each writer.

        Once per batch of lines: every resend line in it was written before the ask goes out, so one ask covers
        them all (a flood of them costs one acknowledgement per writer and read, not per line).  And not when
        our acknowledgements reach no writer (``acks.source`` None: a FIFO other users may write, or read): no
        replay can come, and each one held every writer's lines for Holding.AWAIT_SECONDS again, so another
        user's resend line every few seconds held them all for as long as it went on."""
        if self._asked_as_lines_came or not self._fifo_input or self.acks.source is None:
            return
        self.rep.info("a pass-through before us started: asking our writers again for what we have not acknowledged")
        self.renew()
        self._asked_as_lines_came = True  # (the rest of this batch was written before this ask too)

    def acknowledge(self, force: bool = False) -> set[str]:
        """Tell our writers how far we are (Acknowledger.send); returns the writers that now re-send to us."""
        marks = self.ack_marks()
        done = self.acks.send(marks, force=force, through=self.through.compute(marks))
        for origin in done & self.unreplayed.keys():
            # the first acknowledgement to get through after we took lines without a replay: it said the mark we
            # had then, so the writer re-sends from there (what we took since comes again: duplicates, no loss)
            epoch, before = self.unreplayed.pop(origin)
            if self.marks.get(origin, ("",))[0] == epoch:
                self.marks[origin] = (epoch, before)
                self.holding.expect(origin)
        return done

    def stored_marks(self) -> dict[str, tuple[str, int]]:
        """The marks to commit: a writer's stays where it was while it has not re-sent what a previous process
        of ours may have lost, so the next process asks for that again."""
        return {**self.marks, **self.unreplayed}

    def unacknowledged(self) -> bool:
        """Whether a writer has not been told how far we are now."""
        return self.acks.behind(self.ack_marks())

    def held_back(self, at_end: bool) -> list[bytes]:
        """Lines held while their writer re-sent (Holding) that may be taken now; they are counted (and
        numbered) again when taken."""
        held = {origin: len(self.holding.held.get(origin, ())) for origin in self.holding.waiting}
        released = self.holding.release(at_end=at_end)
        for origin, n in held.items():
            # Taken without a replay from a writer our acknowledgements never reached (after AWAIT_SECONDS, or
            # too many held): pinned (see acknowledge, stored_marks).  Not at the end of the input: no writer is
            # left to re-send then (a pipe's replays from its acknowledgements when it runs again; a FIFO's input
            # never ends), and a pin would make each cron run whose acknowledgement was refused (its writer gone
            # before it was checked) take the last run's lines again.
            if n and not at_end and origin not in self.holding.waiting and not self.acks.reached(origin):
                if origin in self.marks:
                    self.unreplayed.setdefault(origin, self.marks[origin])
                self.rep.warn(
                    f"taking {n} line(s) of {origin} without its replay: our acknowledgements do not reach it; "
                    "what a previous process of ours read and had not stored is asked for again once one does"
                )
        if released:
            self.lineno -= len(released)  # taken again: keep line numbers in messages right
            self.counts.read -= len(released)  # and counted again: each line is read once
        return released

    def take(self, lines: list[bytes]) -> list[Item]:
        items: list[Item] = []
        decode, counts, marks = E.decode, self.counts, self.marks
        # a stage with the default split (fc-filter, fc-record): its one item per event is made here, not through
        # items() and split() (three calls and two lists a line)
        one = self._one_item
        met, waiting, limits = self._met, self.holding.waiting, self._limits
        for line in lines:
            self.lineno += 1
            if not line.endswith(b"\n"):
                if isinstance(line, LongLine):
                    self.bad(f"{line.length} bytes, longer than --max-line-bytes {self.opts.max_line_bytes}", line)
                else:
                    self.bad("incomplete last line (no newline): the writer died mid-line?", line)
                continue
            if line[0] in _BLANK and not line.strip():  # (a strip per line copied every line)
                continue
            try:
                ev = decode(line)
            except E.EventError as exc:
                glued = E.unglue(line)  # a whole line glued to the torn start of one: that line is taken
                if glued is None:
                    self.bad(str(exc), line)
                    continue
                self.bad(E.TORN_START, glued.torn)
                line, ev = glued.line, glued.event
            h = ev.get("hop")  # checked by E.decode (from, epoch: strings; seq: an integer) when there
            if h is None and ev["kind"] == E.RESEND:  # no event: a pass-through before us started
                self.resend()
                continue
            counts.read += 1
            hop = None
            if h is not None:
                origin, epoch, seq = h["from"], h["epoch"], h["seq"]
                hop = Hop(origin, epoch, seq)
                mark = marks.get(origin)
                # the usual line (_hop_taken's every check passed at once): its writer met already in this
                # process, its mark of this epoch below the line, which is the next one or not past what the writer
                # said it had committed when we last looked (_past), none of its lines held
                if (
                    mark is not None
                    and mark[0] == epoch
                    and mark[1] < seq
                    and (seq == mark[1] + 1 or seq <= limits.get((origin, epoch), -1))
                    and origin in met
                    and origin not in waiting
                ):
                    marks[origin] = (epoch, seq)
                elif not self._hop_taken(hop, h, marks, line):
                    continue
            if ev["kind"] == E.DROPPED:  # fc-filter's mark: its writer's lines up to hop.seq dropped, nothing to do
                continue
            recovered = self._maybe_done(hop) if self.was_working else False
            if one:
                path = ev.get("path")  # E.decode checked it: a plain string is the name's UTF-8 (Stage.split's key)
                key = path.encode() if type(path) is str and "path_b64" not in ev else E.get_path(ev, "path")
                item = Item(ev, line, "", key, next(self.order), hop=hop, recovered=recovered)
                items.append(item)
                if hop is not None:
                    self.hold(item)
                continue
            try:
                items.extend(self.items(ev, line, hop, recovered=recovered))
            except E.EventError as exc:
                self.bad(str(exc), line)
            except Exception as exc:  # a stage's split() failing on an event it did not expect: that event only
                import traceback  # only on a failure: not a cost of every start

                self.rep.debug(traceback.format_exc())
                self.bad(f"{self.stage.name} cannot take this event: {exc!r}", line)
        if lines:
            self._asked_as_lines_came = False  # (a resend line of a later round asks again: see resend)
        return items

    def _hop_taken(self, hop: Hop, h: dict, marks: dict[str, tuple[str, int]], line: bytes) -> bool:
        """Whether a line from ``hop`` is taken now: not a replay already taken, not a seq its writer never
        wrote (reported), not held while its writer re-sends (Holding); its writer's mark moves to it."""
        mark = marks.get(hop.origin)
        if hop.origin not in self._met and self._first_line(hop, mark):
            mark = marks[hop.origin]
        new = mark is None or mark[0] != hop.epoch
        high = self._past(hop) if new or hop.seq != mark[1] + 1 else None
        if high is not None:
            self.bad(f"hop.seq {hop.seq} is past the last line {hop.origin} wrote ({high})", line)
            if new:
                # Its state file is a real writer's of that epoch (it said how far it wrote): we register with it
                # as its last real line would have us.  A late reader behind fc-tee may get no other line of it
                # (stages/tee/writers.py: a forger's line of it with this seq written last), and lost all it missed.
                self._register_new(hop.origin, hop.epoch, high + 1)
            return False
        if new:
            self._register_new(hop.origin, hop.epoch, hop.seq)
            mark = marks[hop.origin]
        if hop.origin in self.holding.waiting and not self.holding.take(hop.origin, h.get("for"), line):
            return False
        if hop.seq <= mark[1]:
            self.counts.duplicates += 1
            return False
        marks[hop.origin] = (hop.epoch, hop.seq)
        return True

    def _register_new(self, origin: str, epoch: str, seq: int) -> None:
        """A writer new to us (or whose state was recreated), its first line ``seq``: register at once, and hold its
        lines until it re-sends, for us, all it has kept (lines a previous process of ours may have read and lost
        included).  Only the last lines before the first one we see can have been meant for a process of ours
        (read and lost before it registered): at most a pipe buffer and one reader's queue.  Older ones are not
        ours.  (Held whether or not this acknowledgement gets through: see register.)"""
        start = max(0, seq - 1 - FIRST_CONTACT_WINDOW)
        self.marks[origin] = (epoch, start)
        self.unreplayed.pop(origin, None)  # of its old epoch
        self.acks.send({origin: (epoch, start)}, force=True)
        self.holding.expect(origin)

    def _first_line(self, hop: Hop, mark: tuple[str, int] | None) -> bool:
        """The first line of a writer in this process: when no process before ours can have read one of its
        lines we have not taken (Acknowledger.lost_nothing: a fresh pipeline, a cron run whose reader took
        everything), there is nothing to hold or replay: True, and the writer is registered with that."""
        self._met.add(hop.origin)
        known = mark is not None and mark[0] == hop.epoch
        if not known and self._past(hop) is not None:
            return False  # a seq past what the writer wrote: refused below
        if not self.acks.lost_nothing(hop.origin, hop.epoch, mark[1] if known and mark else None):
            return False
        self.holding.cancel(hop.origin)  # registered at our start (a writer we knew): nothing to wait for
        if not known:
            self.marks[hop.origin] = (hop.epoch, hop.seq - 1)  # earlier lines went elsewhere (a filter between)
        self.acks.send({hop.origin: self.marks[hop.origin]}, force=True)
        return True

    def _past(self, hop: Hop) -> int | None:
        """None when ``hop.seq`` may be a line its writer wrote; else the highest seq the writer has committed
        (the line is forged).  Taken, a seq past what the writer wrote moves our mark there, and every real line
        of the writer up to it looks like a replay: dropped, and acknowledged, so the writer forgets it too.  A
        writer commits a line before it writes it, so its state file is read only for a seq past what it said
        the last time, and not for the next seq after our mark (a live stream's every line: a look costs 0.1-0.4
        ms, each stage's, on a loaded machine); a forged line can so hide one line of its writer, not thousands.
        When its state file tells nothing (not here, another epoch there now), looked at again SEQ_JUMP seqs
        further."""
        key = (hop.origin, hop.epoch)
        limits = self._limits
        if hop.seq <= limits.get(key, -1):
            return None
        high = self.acks.high(hop.origin, hop.epoch)
        if len(limits) >= 4096:  # (forged hops can name endless writers and epochs)
            limits.clear()
        limits[key] = hop.seq + SEQ_JUMP if high is None else high
        return high if high is not None and hop.seq > high else None

    def _maybe_done(self, hop: Hop | None) -> bool:
        """Whether a killed process of ours may have worked on this line before it could commit it."""
        if hop is None or not self.was_working:
            return False
        mark = self.was_working.get(hop.origin)
        return mark is not None and mark[0] == hop.epoch and hop.seq <= mark[1]

    def begin_work(self, items: list[Item]) -> None:
        """Before the stage works ``items`` at once, ahead of the commit that takes their lines: how far each
        writer's lines go, committed, so that after a kill before that commit the lines the writer sends again
        are marked ``recovered`` (the stage looks at the destination before redoing them).  One small
        transaction, only when a line is past the mark committed (WORKING_AHEAD)."""
        moved: dict[str, tuple[str, int]] = {}
        for item in items:
            hop = item.hop
            if hop is None:
                continue
            mark = moved.get(hop.origin) or self.working.get(hop.origin)
            if mark is None or mark[0] != hop.epoch or mark[1] < hop.seq:
                moved[hop.origin] = (hop.epoch, hop.seq + WORKING_AHEAD)
        ahead = self.stage.work_ahead(items)  # the stage's own rows (fc-transport: the names it will upload to)
        if moved or ahead is not None:
            with self.state.transaction() as db:
                if moved:
                    self.state.save_working(db, moved)
                if ahead is not None:
                    ahead(db)
            self.working.update(moved)

    def end_work(self) -> None:
        """At a clean end: the working marks come back to the lines really taken.  Left WORKING_AHEAD beyond
        them, the next run's first lines (fc-watch's seqs go on across runs) came as ``recovered``, and a file
        touched with the same bytes was reported unchanged instead of sent."""
        back = {
            origin: (epoch, self.marks[origin][1])
            for origin, (epoch, seq) in self.working.items()
            if origin in self.marks and self.marks[origin][0] == epoch and self.marks[origin][1] < seq
        }
        ahead = self.stage.work_ahead([]) if self.stage.quick_works else None  # (what it wrote ahead, gone)
        if back or ahead is not None:
            with self.state.transaction() as db:
                if back:
                    self.state.save_working(db, back)
                if ahead is not None:
                    ahead(db)
            self.working.update(back)

    def items(self, ev: dict, line: bytes, hop: Hop | None = None, recovered: bool = False) -> list[Item]:
        if hop is None:
            hop = Hop.from_event(ev)
        order = self.order
        items = [
            Item(part, line if part is ev else E.encode(part), lane, key, next(order), hop=hop, recovered=recovered)
            for lane, key, part in self.stage.split(ev)
        ]
        if hop is not None and items:  # hold() for each: the items of a line share its hop
            held = self.held.get((hop.origin, hop.epoch))
            if held is None:
                held = self.held[(hop.origin, hop.epoch)] = {}
            held[hop.seq] = held.get(hop.seq, 0) + len(items)
        return items

    # A plain dict of counts, not a Counter: its missing keys and deletions are Python code, twice per line.
    def hold(self, item: Item) -> None:
        hop = item.hop
        if hop is not None:
            held = self.held.get((hop.origin, hop.epoch))
            if held is None:
                held = self.held[(hop.origin, hop.epoch)] = {}
            held[hop.seq] = held.get(hop.seq, 0) + 1

    def release(self, item: Item) -> None:
        hop = item.hop
        if hop is not None:
            held = self.held.get((hop.origin, hop.epoch))
            if held is not None:
                n = held.get(hop.seq, 0) - 1
                if n > 0:
                    held[hop.seq] = n
                else:
                    held.pop(hop.seq, None)

    def ack_marks(self) -> dict[str, tuple[str, int]]:
        out = {}
        for origin, (epoch, hwm) in self.marks.items():
            held = self.held.get((origin, epoch))
            out[origin] = (epoch, min(hwm, min(held) - 1) if held else hwm)
        out.update(self.unreplayed)
        return out

    def bad(self, reason: str, line: bytes) -> None:
        self.counts.bad += 1
        shown = line[:200].decode("utf-8", "replace").rstrip("\n")
        self.rep.error(f"input line {self.lineno}: {reason}: {shown!r} (skipped)")
