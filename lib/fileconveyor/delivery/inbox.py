"""The inbox: items read (or queued by the stage) and not finished yet, in the state file.

An item goes into the ``inbox`` table in the transaction that takes its line, unless it is finished at once
(then only its output is stored); a retry updates its row with the time it is due; a finished item's row goes
in the transaction that stores its output.  At start, what a previous run left is queued again.  An item whose
commit keeps raising (a stage's bug) is set aside in the ``quarantine`` table (delivery/quarantine.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from .. import backoff
from .. import events as E
from ..report import Reporter
from . import quarantine
from .durable import Hop, StageState
from .intake import Intake
from .lanes import Scheduler
from .options import Counters
from .stage import Also, Done, Item, Outcome, Retry

_UPDATE = "UPDATE inbox SET attempts=?, not_before=?, last_error=?, internal=? WHERE id=?"


class Inbox:
    def __init__(self, state: StageState, sched: Scheduler, intake: Intake, counts: Counters, rep: Reporter):
        self.state = state
        self.sched = sched
        self.input = intake
        self.counts = counts
        self.rep = rep
        self.next_id: int | None = None
        self.enqueued: list[Item] = []  # queued by Stage.record (enqueue_in), scheduled after the commit

    def load(self) -> None:
        """The items a previous run left unfinished, queued again (or set aside when they no longer decode)."""
        rows = self.state.db.execute(
            "SELECT id, line, lane, key, attempts, not_before, last_error, internal FROM inbox ORDER BY id"
        ).fetchall()
        lanes = self.sched.lanes
        undecodable: list[tuple[int, bytes, str, bytes, int, str]] = []
        for rid, line, lane, key, attempts, not_before, last_error, internal in rows:
            if lane not in lanes:
                self.rep.warn_once(
                    f"lane:{lane}", f"{len(rows)} queued item(s) include some for {lane!r}, not configured now: kept"
                )
                continue
            try:
                ev = E.decode(bytes(line))
            except E.EventError as exc:  # stored by an older version that took more: never retried, set aside
                undecodable.append((rid, line, lane, key, attempts, f"stored line is not a valid event: {exc}"))
                continue
            item = Item(ev, line, lane, bytes(key), next(self.input.order), rid, attempts, not_before, last_error)
            item.internal = internal
            item.recovered = True
            item.hop = Hop.from_event(ev)
            self.input.hold(item)
            self.sched.add(item)
        if undecodable:
            with self.state.transaction() as db:
                for rid, line, lane, key, attempts, reason in undecodable:
                    quarantine.put(db, line, lane, key, attempts, reason)
                    db.execute("DELETE FROM inbox WHERE id=?", (rid,))
            self.counts.quarantined += len(undecodable)
            for *_, reason in undecodable:
                self.rep.error(f"queued item set aside (quarantine table of {self.state.path}): {reason}")
        if rows:
            self.rep.info(f"resuming {len(rows)} unfinished item(s) from {self.state.path}")

    def enqueue(self, events: Iterable[dict], also: Also | None = None) -> int:
        """Queue events as if read (used by --retry-failed); committed at once, together
        with what ``also`` writes in the same transaction."""
        items = []
        for ev in events:
            ev = {k: v for k, v in ev.items() if k != "hop"}
            items.extend(self.input.items(ev, E.encode(ev)))
        with self.state.transaction() as db:
            self.insert(db, items)
            if also is not None:
                also(db)
        for it in items:
            self.sched.add(it)
        return len(items)

    def enqueue_in(self, db: sqlite3.Connection, events: Iterable[dict]) -> None:
        """From ``Stage.record``: queue events in the transaction that finishes an item, so that a crash keeps
        both or neither (fc-process queues the CSS files that reference a file that got a new name).  They are
        scheduled once that transaction is committed."""
        items = []
        for ev in events:
            ev = {k: v for k, v in ev.items() if k != "hop"}
            items.extend(self.input.items(ev, E.encode(ev)))
        self.insert(db, items)
        self.enqueued.extend(items)

    def insert(self, db: sqlite3.Connection, items: list[Item]) -> None:
        """New items into the inbox (their ids given here: one executemany instead of a statement each)."""
        if not items:
            return
        if self.next_id is None:
            (self.next_id,) = db.execute("SELECT coalesce(max(id), 0) + 1 FROM inbox").fetchone()
        for it in items:
            it.id = self.next_id
            self.next_id += 1
        db.executemany(
            "INSERT INTO inbox(id, line, lane, key, attempts, not_before, last_error, internal) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(it.id, it.line, it.lane, it.key, it.attempts, it.not_before, it.last_error, it.internal) for it in items],
        )

    def retry(
        self,
        db: sqlite3.Connection,
        item: Item,
        outcome: Retry,
        inbox_new: list[Item],
        updates: list[tuple] | None = None,
    ) -> None:
        """The item's row says when it is tried again (a new item goes to ``inbox_new``, inserted with the round;
        with ``updates``, an item's row change goes there, for ``update_rows`` once per round)."""
        item.attempts += 1
        item.last_error = outcome.reason
        item.not_before = 0.0 if outcome.lane else time.time() + outcome.after
        self.counts.retries += 1
        if item.id is None:
            inbox_new.append(item)
            return
        row = (item.attempts, item.not_before, outcome.reason, item.internal, item.id)
        if updates is None:
            db.execute(_UPDATE, row)
        else:
            updates.append(row)

    def update_rows(self, db: sqlite3.Connection, updates: list[tuple]) -> None:
        """The rows ``retry`` gathered, in one statement."""
        if updates:
            db.executemany(_UPDATE, updates)

    def set_aside(self, db: sqlite3.Connection, item: Item, exc: Exception, to_insert: list[Item]) -> Outcome:
        """An item whose commit raised: tried again a little later, set aside after QUARANTINE_AFTER attempts."""
        item.internal += 1
        reason = f"internal error: {exc!r}"
        where = E.display(E.get_path(item.event, "path"))
        if item.internal >= quarantine.QUARANTINE_AFTER:
            quarantine.put(db, item.line, item.lane, item.key, item.attempts, reason)
            if item.id is not None:
                db.execute("DELETE FROM inbox WHERE id=?", (item.id,))
            self.counts.quarantined += 1
            self.rep.error(
                f"{where}: {reason}; set aside after {item.internal} attempts (the quarantine table of "
                f"{self.state.path}), not retried"
            )
            return Done([])
        retry = Retry(reason, after=backoff.delay(item.internal - 1, quarantine.FIRST_DELAY, 60.0))
        self.retry(db, item, retry, to_insert)
        self.counts.retries -= 1  # not a retry the stage asked for
        if not self.sched.head(item):
            self.sched.add_running(item)  # it was finished at once: now it holds its key until retried
        return retry
