"""What a stage implements, and what it returns: the interface between a stage's own logic
(stages/<command>/stage.py) and the delivery protocol that carries its events (delivery/runner.py).

A stage says what to do with one event (``Stage.work``) and, if it needs them, what its lanes are, how an event
splits into items, what it writes into the state file with a finished item; the runner does the rest.  What a
stage may ask of the delivery is its ``StageContext``, given to ``Stage.start``: never the runner itself, so that
another kind of hop can carry the same stages.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .. import events as E
from ..plain import Frozen, Value
from ..report import Reporter
from .durable import Hop

Also = Callable[[sqlite3.Connection], None]  # more writes, in the transaction that commits events


class Done(Value):
    """The item is finished: write these events (none, for a filter that drops it)."""

    __slots__ = ("added", "failed", "outputs", "payload", "unchanged")
    _fields = ("outputs", "failed", "unchanged", "added", "payload")

    def __init__(
        self,
        outputs: list[dict] | None = None,
        failed: bool = False,  # an output carries an ``error`` field
        # ``outputs`` is ``[item.event]``, not changed by the stage: its line is written as read, with only its hop
        # replaced (events.rehop), instead of encoding the event again (fc-filter, fc-record)
        unchanged: bool = False,
        # ``outputs[0]`` is ``item.event`` without its hop, with these fields added at its end (in this order), none
        # of which it had: its line is written as read with them added before the new hop (events.rehop, members),
        # instead of encoding the whole event again (fc-transport's server, remote, url, transported)
        added: tuple[str, ...] = (),
        # what work() did that record() writes into the state file (fc-transport's new remote name, fc-process's
        # work directory): it travels with the outcome to the commit, and comes again if that commit is redone
        payload: Any = None,
    ):
        self.outputs = [] if outputs is None else outputs
        self.failed = failed
        self.unchanged = unchanged
        self.added = added
        self.payload = payload


class Retry(Value):
    """Not now: try the item again in ``after`` seconds.  ``lane=True`` means the whole
    lane is in trouble (server down): it pauses with back-off instead."""

    __slots__ = ("after", "lane", "reason")
    _fields = ("reason", "after", "lane")

    def __init__(self, reason: str, after: float = 0.0, lane: bool = False):
        self.reason = reason
        self.after = after
        self.lane = lane


Outcome = Done | Retry


class Item:
    """One unit of work: an event on a lane, ordered by ``key``."""

    __slots__ = (
        "attempts",
        "event",
        "hop",
        "id",
        "internal",
        "key",
        "lane",
        "last_error",
        "line",
        "not_before",
        "order",
        "recovered",
    )

    def __init__(
        self,
        event: dict,
        line: bytes,  # the event as read (what the inbox stores)
        lane: str,
        key: bytes,
        order: int,
        id: int | None = None,  # inbox row, once committed there
        attempts: int = 0,
        not_before: float = 0.0,  # wall clock
        last_error: str | None = None,
        hop: Hop | None = None,  # where the event came from, for acknowledgements
        internal: int = 0,  # attempts that failed in the stage itself (delivery/quarantine.py)
        recovered: bool = False,  # from the inbox at start: a killed process may have done it, not recorded it
    ):
        self.event = event
        self.line = line
        self.lane = lane
        self.key = key
        self.order = order
        self.id = id
        self.attempts = attempts
        self.not_before = not_before
        self.last_error = last_error
        self.hop = hop
        self.internal = internal
        self.recovered = recovered

    def __repr__(self) -> str:
        return f"Item(lane={self.lane!r}, key={self.key!r}, order={self.order!r}, id={self.id!r})"


class Stage:
    """What a stage implements.  Subclasses override ``work`` and maybe the rest."""

    name = "fc-stage"
    migrations: Sequence[str] = ()  # the stage's own tables, in the same state file
    # quick() may do real work, with effects outside the state file (fc-transport's small copies to a local
    # folder), before the commit that takes the item's line: the runner then commits how far its lines go first
    # (Intake.begin_work), and after a kill the lines sent again up to there come as ``recovered`` items
    quick_works = False

    def lanes(self) -> dict[str, int]:
        """Lane name -> number of worker threads; 0 runs the work inline."""
        return {"": 0}

    def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
        """The work items of one event: (lane, key, event) each."""
        return [("", E.get_path(event, "path"), event)]

    def start(self, ctx: StageContext) -> None:
        """Called once the state is open, before any work: ``ctx`` is what the stage may ask of the delivery."""

    def work_ahead(self, items: list[Item]) -> Callable[[sqlite3.Connection], None] | None:
        """With ``quick_works``: what to write into the state file before ``items`` are worked at once, in the
        transaction of the working marks (Intake.begin_work), committed before any of their effects; called with
        no items at a clean end (Intake.end_work).  fc-transport: the names it is about to upload to, which a
        process killed before its commit leaves for the next one.  None: nothing to write."""
        return None

    def work(self, item: Item) -> Outcome:
        raise NotImplementedError

    def quick(self, item: Item) -> Done | None:
        """For stages with workers: the outcome of an item that needs no real work (a
        pass-through), decided at once in the main thread; None hands it to a worker.
        Only called when no earlier item of its key is pending.  With ``quick_works``, it may
        also do an item's work at once (a small local copy) when that costs less than the hand-off."""
        return None

    def flush(self) -> str | None:
        """Called once per round, after its work and before its commit to the state file: a stage that writes a
        database of its own in one transaction per round (fc-record) commits it here, so that it is durable
        before the state file says the round's items are done.  Returns why it could not: every item the
        round finished is then tried again."""
        return None

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        """Extra writes into the state file, in the transaction that finishes ``item``, from what ``work`` said
        (``outcome.payload``).  Each output event in ``outcome.outputs`` carries its ``hop`` (with our seq) by now.
        May be called again with the same outcome when the transaction is rolled back and redone: what it
        changes outside the file goes through ``StageContext.after_commit`` (done once the rows are in) and
        ``on_rollback`` (what it took from memory, given back), never straight away."""

    def recorded(self, db: sqlite3.Connection) -> None:
        """Called once the round's items are recorded, in the same transaction (in a commit redone item by item,
        after each item's record(), inside its savepoint), and after the ``also`` of emitted events: rows that
        record() gathered go in together (one executemany, not a statement per line).  Rows gathered must be
        dropped if the transaction is rolled back (``StageContext.on_rollback``)."""

    def released(self, seq: int) -> None:
        """Every reader of ours is done with our output lines up to ``seq`` (or, with no
        File Conveyor reader, they were written long enough ago): files they refer to
        (fc-process's work files) may go."""

    def progress(self) -> str:
        return ""

    def close(self) -> None:
        pass


class Timed(Protocol):
    """Work a stage does at set times on threads of its own (delivery/timed.py), which the end of the input
    waits for like queued items: fc-transport's delayed deletions of old names, its CDN invalidations."""

    def pending(self) -> int:
        """How many are left."""
        ...

    def due_before(self, deadline: float) -> int:
        """How many of them may be carried out before ``deadline`` (wall clock)."""
        ...

    def hurry(self) -> None:
        """The input ended and every item is done: do now what was only waiting for company (a batch)."""
        ...


class StageContext(Frozen):
    """All a stage gets from the delivery (``Stage.start``): the runner itself stays out of reach, so a stage
    cannot come to depend on how a hop works.

    - ``rep``: messages for people (any thread);
    - ``state_path``: the state file (a stage keeps its own files next to it);
    - ``db``: the state file's connection, for reading in the main thread (start, quick, record), and
      ``transaction()`` for a stage's own writes outside ``record`` (fc-process's released work files);
    - ``readers()``: how far each File Conveyor stage reading our output has acknowledged it (our seq);
    - ``throughs()``: how far each of them *and every stage after it* are done with it (delivery/through.py);
    - ``emit(outputs, also=None)``: events no input item produced (an old name deleted later), committed to the
      outbox with what ``also`` writes, then written; from any thread (Runner.emit);
    - ``enqueue(events, also=None)``: events queued as if read, committed at once (--retry-failed);
    - ``enqueue_in(db, events)``: from ``record``, events queued in the transaction that finishes an item;
    - ``add_timed(work, what)``: from ``start``, work on the stage's own threads that the end of the input waits
      for (Runner.add_timed);
    - ``after_commit(effect)`` / ``on_rollback(effect)``: from ``record`` or an ``also``, what to do in memory
      once the transaction has committed, or to give back if it is rolled back (delivery/effects.py).
    """

    __slots__ = (
        "add_timed",
        "after_commit",
        "db",
        "emit",
        "enqueue",
        "enqueue_in",
        "on_rollback",
        "readers",
        "rep",
        "state_path",
        "throughs",
        "transaction",
    )
    _fields = (
        "rep",
        "state_path",
        "db",
        "transaction",
        "readers",
        "throughs",
        "emit",
        "enqueue",
        "enqueue_in",
        "add_timed",
        "after_commit",
        "on_rollback",
    )

    def __init__(
        self,
        *,
        rep: Reporter,
        state_path: Path,
        db: sqlite3.Connection,
        transaction: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
        readers: Callable[[], dict[str, int]],
        throughs: Callable[[], dict[str, int]],
        emit: Callable[..., None],
        enqueue: Callable[..., int],
        enqueue_in: Callable[[sqlite3.Connection, Iterable[dict]], None],
        add_timed: Callable[[Timed, str], None],
        after_commit: Callable[[Callable[[], None]], None],
        on_rollback: Callable[[Callable[[], None]], None],
    ):
        object.__setattr__(self, "rep", rep)
        object.__setattr__(self, "state_path", state_path)
        object.__setattr__(self, "db", db)
        object.__setattr__(self, "transaction", transaction)
        object.__setattr__(self, "readers", readers)
        object.__setattr__(self, "throughs", throughs)
        object.__setattr__(self, "emit", emit)
        object.__setattr__(self, "enqueue", enqueue)
        object.__setattr__(self, "enqueue_in", enqueue_in)
        object.__setattr__(self, "add_timed", add_timed)
        object.__setattr__(self, "after_commit", after_commit)
        object.__setattr__(self, "on_rollback", on_rollback)
