"""The commit step of a stage: what a round of the runner's loop changed, in one transaction of its state file.

A round (delivery/runner.py) reads lines, gets results from its workers and events its stage emitted; this
writes all of it at once, before anything is written to the output or acknowledged upstream:

- the ``upstream`` marks of the lines taken;
- each finished item: its output lines into the outbox (each with a new ``hop``), the stage's own rows
  (``Stage.record``), its inbox row gone; each item to retry: its retry time;
- the items that must wait (behind an earlier item of their path, or handed to a worker) into the inbox;
- the events the stage emitted, with what their ``also`` writes;
- the ``written`` mark: lines of earlier rounds that are out.

When the transaction raises a stage's bug (quarantine.is_bug: an event it cannot carry, a bookkeeping error),
it is rolled back and done again *carefully*: each finished item in a savepoint of its own, so only the item at
fault waits, and is set aside if it keeps failing.  What the first try changed in memory is undone first (item
ids, retry counts: ``_snapshot``), and what the stage did outside the file waits for the commit
(delivery/effects.py), so the redo does each thing once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .. import events as E
from ..report import Reporter
from . import quarantine
from .durable import StageState
from .inbox import Inbox
from .intake import Intake
from .options import Counters
from .sending import Sending
from .stage import Also, Item, Outcome, Retry, Stage

Emitted = list[tuple[list[dict], Also | None]]  # events a stage emitted, each batch with its ``also``
Lines = list[tuple[int, bytes]]  # output lines and their seqs, committed to the outbox: to write
Results = list[tuple[Item, Outcome]]  # the items a round finished or must retry, with their outcomes


class Commit:
    """A stage's commit step: ``round`` for a round of the loop, ``emitted`` for events emitted after it."""

    __slots__ = (
        "_head",
        "_null",
        "_old_heads",
        "_record",
        "_recorded",
        "_tag",
        "_updates",
        "counts",
        "inbox",
        "intake",
        "output",
        "rep",
        "stage",
        "state",
    )

    def __init__(
        self,
        state: StageState,
        stage: Stage,  # its record(), in the transaction that finishes an item
        inbox: Inbox,
        intake: Intake,  # the upstream marks to store
        output: Sending,  # the hop tag of our lines, and what is delivered
        counts: Counters,
        rep: Reporter,
    ):
        self.state = state
        self.stage = stage
        self.inbox = inbox
        self.intake = intake
        self.output = output
        self.counts = counts
        self.rep = rep
        self._null = False  # this round's output is the null device (Sending.discards): lines are neither made nor kept
        self._tag: list[str] | None = None  # this round's hop.for (Sending.tag), looked up once a round
        self._head: bytes | None = None  # with no hop.for: ``,"hop":`` and the JSON of our hops up to the seq
        self._updates: list[tuple] | None = None  # this round's retried inbox rows (Inbox.retry)
        self._old_heads: dict[tuple[str, str], bytes] = {}  # the same of the hops we read (from, epoch)
        # the stage's record(), None when it has none (Stage's does nothing): not a call per line for nothing
        self._record = stage.record if type(stage).record is not Stage.record else None
        self._recorded = stage.recorded if type(stage).recorded is not Stage.recorded else None

    def round(self, took_lines: bool, done: Results, to_insert: list[Item], emitted: Emitted) -> Lines:
        """Commit a round; the output lines to write now.  An item whose writes keep raising is set aside or
        retried later: its entry in ``done`` says so then.  Raises what is not a stage's bug (a full disk)."""
        lines: Lines = []
        # nothing to commit (a pass of the loop that found nothing): no write transaction, which would also
        # make a reader's acknowledgement into our state file wait for the lock
        if not (took_lines or done or emitted or to_insert or self.output.delivered() > self.state.written):
            return lines
        restore = self._snapshot(done, to_insert)
        try:
            with self.state.transaction() as db:
                self._writes(db, took_lines, done, to_insert, emitted, lines, careful=False)
        except Exception as exc:
            if not quarantine.is_bug(exc):
                raise
            # Something in this round cannot be committed: again, item by item
            import traceback  # only on a failure: not a cost of every start

            self.rep.debug(traceback.format_exc())
            restore()
            lines.clear()
            self.inbox.enqueued.clear()  # rolled back with the rest
            with self.state.transaction() as db:
                self._writes(db, took_lines, done, to_insert, emitted, lines, careful=True)
        return lines

    def emitted(self, emitted: Emitted) -> Lines:
        """Commit events emitted once the loop has ended (Runner.emit); the lines to write.  Raises when the
        transaction fails: nothing was committed, and the stage does that work again next run."""
        lines: Lines = []
        with self.state.transaction() as db:
            self._add_emitted(db, emitted, lines)
            if self._recorded is not None:
                self._recorded(db)
        return lines

    # -- inside the transaction --------------------------------------------------------

    def _writes(
        self,
        db: sqlite3.Connection,
        took_lines: bool,
        done: Results,
        to_insert: list[Item],
        emitted: Emitted,
        lines: Lines,
        careful: bool,
    ) -> None:
        """A round's writes.  ``careful``: each finished item in a savepoint of its own; one whose writes raise
        is retried later, or set aside (delivery/quarantine.py), and ``done`` says so."""
        self._null, self._tag = self.output.discards, self.output.tag
        self._head = b',"hop":' + E.hop_head(self.state.origin, self.state.epoch) if not self._tag else None
        if took_lines:
            self.state.save_upstream(db, self.intake.stored_marks())
        finished: list[tuple[int]] = []
        # the retries' inbox rows: one statement a round (careful: each in its item's savepoint)
        self._updates = None if careful else []
        for i, (item, outcome) in enumerate(done):
            if not careful:
                self._write_item(db, item, outcome, to_insert, lines, finished)
                continue
            marks = (len(lines), len(finished), self.counts.failed, len(self.inbox.enqueued))
            try:
                with self.state.effects.savepoint(db):  # the item's writes and its stage's effects, or neither
                    self._write_item(db, item, outcome, to_insert, lines, finished)
                    if self._recorded is not None:
                        self._recorded(db)
            except Exception as exc:
                if not quarantine.is_bug(exc):
                    raise
                del lines[marks[0] :], finished[marks[1] :], self.inbox.enqueued[marks[3] :]
                self.counts.failed = marks[2]
                done[i] = (item, self.inbox.set_aside(db, item, exc, to_insert))
        if self._updates:
            self.inbox.update_rows(db, self._updates)
        self.inbox.insert(db, [it for it in to_insert if it.id is None])
        if finished:
            db.executemany("DELETE FROM inbox WHERE id=?", finished)
        if not self._null:
            self.state.add_outbox(db, lines)
        if emitted:
            self._add_emitted(db, emitted, lines)
        if self._recorded is not None:
            self._recorded(db)  # the rows the stage's record() (and the ``also`` of emitted events) gathered
        self.state.mark_written(db, self.output.delivered())  # lines of earlier rounds are out (or read)

    def _write_item(
        self,
        db: sqlite3.Connection,
        item: Item,
        outcome: Outcome,
        to_insert: list[Item],
        lines: Lines,
        finished: list[tuple[int]],
    ) -> None:
        if outcome.__class__ is Retry:
            self.inbox.retry(db, item, outcome, to_insert, self._updates)  # type: ignore[arg-type]
            return
        # its output lines into ``lines`` (stored in the outbox once per round), its inbox row into ``finished``
        state = self.state
        for ev in outcome.outputs:  # type: ignore[union-attr]
            old = ev.get("hop", E.MISSING)
            hop = ev["hop"] = state.hop(self._tag)  # with no line too: Stage.record may use its seq
            if self._null:
                lines.append((hop["seq"], b""))
                continue
            line = None
            if ev is item.event and outcome.unchanged:  # type: ignore[union-attr]
                line = self._pass_on(item, old, hop, b"")
            elif outcome.added and ev is outcome.outputs[0]:  # type: ignore[union-attr]
                more = E.members(ev, outcome.added)  # type: ignore[union-attr]
                line = self._pass_on(item, item.event.get("hop", E.MISSING), hop, more)
            lines.append((hop["seq"], line if line is not None else E.encode(ev)))
        if self._record is not None:
            self._record(db, item, outcome)
        if item.id is not None:
            finished.append((item.id,))
        if outcome.failed:  # type: ignore[union-attr]
            self.counts.failed += 1

    def _pass_on(self, item: Item, old: object, hop: dict, more: bytes) -> bytes | None:
        """The item's line as read with ``more`` added and its hop ``old`` (as decoded) replaced by ``hop``
        (events.rehop); None when it must be encoded again.  The usual line (its hop from, epoch, seq; ours
        without hop.for) is cut by its bytes (events.swap_hop, with the hop the reader took from it: item.hop),
        with no JSON made of either hop but our seq; any other through rehop."""
        head = self._head
        if head is not None:
            seq = hop["seq"]
            tail = b"%s%d}}\n" % (head, seq)
            h = item.hop
            if h is not None:
                key = (h.origin, h.epoch)
                old_head = self._old_heads.get(key)
                if old_head is None:
                    if len(self._old_heads) >= 256:  # forged hops could name endless writers
                        self._old_heads.clear()
                    old_head = self._old_heads[key] = b',"hop":' + E.hop_head(h.origin, h.epoch)
                line = E.swap_hop(item.line, old_head, h.seq, tail, more)
                if line is not None:
                    return line
            own = tail[7:-2]  # (``,"hop":`` ... ``}}\n``): hop_json of our hop
        else:
            own = None
        return E.rehop(item.line, old, hop, more, own)

    def _add_emitted(self, db: sqlite3.Connection, emitted: Emitted, lines: Lines) -> None:
        """The outbox lines of emitted events (added to ``lines``) and what their ``also`` writes."""
        start = len(lines)
        null = self.output.discards
        for outputs, also in emitted:
            for ev in outputs:
                hop = ev["hop"] = self.state.hop(self.output.tag)
                lines.append((hop["seq"], b"" if null else E.encode(ev)))
            if also is not None:
                also(db)
        if not null:
            self.state.add_outbox(db, lines[start:])

    def _snapshot(self, done: Results, to_insert: list[Item]) -> Callable[[], None]:
        """What a round's commit changes in memory, to undo when it is rolled back and done again carefully."""
        n_insert = len(to_insert)
        ids = [(it, it.id) for it in to_insert]
        retried = [(it, it.id, it.attempts, it.last_error, it.not_before) for it, o in done if isinstance(o, Retry)]
        counts = (self.counts.failed, self.counts.retries)

        def restore() -> None:
            del to_insert[n_insert:]
            for it, rid in ids:
                it.id = rid
            for it, rid, attempts, last_error, not_before in retried:
                it.id, it.attempts, it.last_error, it.not_before = rid, attempts, last_error, not_before
            self.counts.failed, self.counts.retries = counts

        return restore
