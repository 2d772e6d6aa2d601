"""fc-consume: events from the partitions of a NATS JetStream stream, written for the next local stage.

fc-consume is a File Conveyor writer like any stage (its lines carry its ``hop``, it keeps them in its
outbox until the next stage acknowledges them, it re-sends them to a reader that restarts), built on the
common runner; its input is the broker (feed.py).  What it adds:

- **acknowledging the broker only once the last local stage has the line.**  Each emitted line's seq is
  stored with the message it came from (``consume_pending``, in the transaction that puts the line in the
  outbox); once every reader, and every File Conveyor stage after it, is done with our lines up to a seq
  (their ``through``, delivery/through.py: fc-record has recorded what fc-transport uploaded of them), those
  messages are acknowledged to the server.  Until then the feed keeps them in progress, so a slow
  destination does not make the server redeliver them, and a worker lost for good leaves them to another.
- **never the same message twice to the reader.**  A message redelivered while we still hold it (our
  process restarted, the ack wait passed) is in ``consume_pending``: it is not emitted again (our outbox
  re-sends the line if the reader needs it).
- **a per-path fence.**  ``consume_fence`` keeps, per path, the order of the last event emitted: the
  writer's epoch and seq from the publisher (fc-watch's order), else the stream sequence.  An event that is
  not newer (a redelivery whose acknowledgement the server lost, a line re-published after the duplicate
  window) is dropped and acknowledged: it can never overtake the newer event of its path.

With a static assignment (--partitions LIST) the fence lives in this state file only: run a partition's
consumer with the same --state wherever it runs.  With leases (--partitions auto) each path's last *applied*
order (the worker's last stage has it) is also written to the broker's fence bucket before the message is
acknowledged, and read from there too, so it survives a change of owner (delivery/nats_leases.py); written
at emission it would make a new owner drop an event the dead owner emitted but never got applied.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ... import events as E
from ...delivery import nats_hop as N
from ...delivery.stage import Done, Item, Outcome, Stage, StageContext
from .feed import FIELD, Feed

NOT_READ = object()  # the shared fence of a message the feed could not read
RELEASE_EVERY = 0.3  # seconds between looks at how far the stages after us are (their ``through``)

MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE consume_pending(seq INTEGER PRIMARY KEY, part INTEGER NOT NULL, sseq INTEGER NOT NULL,
                                 reply TEXT NOT NULL);
    CREATE UNIQUE INDEX consume_pending_msg ON consume_pending(part, sseq);
    CREATE TABLE consume_fence(path BLOB PRIMARY KEY, epoch TEXT NOT NULL, oseq INTEGER NOT NULL,
                               part INTEGER NOT NULL, sseq INTEGER NOT NULL);
    """,
    # the path and order of each message held, for the shared fence (--partitions auto) once it is applied
    """
    ALTER TABLE consume_pending ADD COLUMN path BLOB;
    ALTER TABLE consume_pending ADD COLUMN epoch TEXT;
    ALTER TABLE consume_pending ADD COLUMN oseq INTEGER;
    """,
)


def newer(old: tuple[str, int, int, int], new: tuple[str, int, int, int]) -> bool:
    """Is ``new`` (epoch, writer seq, partition, stream seq) after ``old`` for one path?  The writer's order
    when both come from the same writer's life, else the stream's (one partition per path: one order)."""
    o_epoch, o_seq, o_part, o_sseq = old
    n_epoch, n_seq, n_part, n_sseq = new
    if n_epoch and n_epoch == o_epoch and n_seq >= 0 and o_seq >= 0:
        return n_seq > o_seq
    if n_part != o_part:  # the stream was made again with other partitions: nothing to compare
        return True
    return n_sseq > o_sseq


class ConsumeStage(Stage):
    name = "fc-consume"
    migrations = MIGRATIONS

    def __init__(self, broker: N.Broker, feed: Feed):
        self.broker = broker
        self.feed = feed
        self.ctx: StageContext | None = None
        self.db: sqlite3.Connection | None = None
        self.pending: dict[tuple[int, int], int] = {}  # (partition, stream seq) -> our seq, until released
        self.applied: dict[tuple[int, int], tuple[bytes, tuple[str, int, int, int]]] = {}  # -> path, order
        self.fence: dict[bytes, tuple[str, int, int, int]] = {}  # this round's, before its commit
        self.round: set[tuple[int, int]] = set()  # messages emitted this round, before its commit
        self.emitted = 0
        self._next_release = 0.0
        self.fenced = 0
        self.again = 0

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.db = ctx.db
        rows = self.db.execute("SELECT seq, part, sseq, reply, path, epoch, oseq FROM consume_pending")
        for seq, part, sseq, reply, path, epoch, oseq in rows:
            self.pending[(part, sseq)] = seq
            if path is not None:
                self.applied[(part, sseq)] = (path, (epoch, oseq, part, sseq))
            self.feed.hold((part, sseq), reply)  # kept in progress, acknowledged once released
        if self.pending:
            ctx.rep.info(f"{len(self.pending)} message(s) emitted before, waiting for the next stage")
        self.feed.start(self._ready)

    def _ready(self, total: int, partitions: list[int]) -> None:
        assert self.ctx is not None
        shown = ",".join(map(str, partitions)) if self.feed.leases is None else "those whose lease we hold"
        self.ctx.rep.info(f"{self.broker.target.shown}: {total} partitions, consuming {shown}")

    def work(self, item: Item) -> Outcome:
        ev = dict(item.event)
        meta = ev.pop(FIELD, None)
        if not isinstance(meta, dict):  # not from our feed (an event can only come from it): nothing to do
            return Done([])
        key = (int(meta["p"]), int(meta["sseq"]))
        reply = str(meta["reply"])
        if not self.feed.owns(key[0]):  # the lease was lost since it was read: the new owner applies it
            return Done([])
        if key in self.pending or key in self.round:
            # delivered again while we hold it: the reader has it (or gets it from our outbox)
            self.again += 1
            return Done([], payload=(key, reply, None))
        path = E.get_path(ev, "path")
        order = (str(meta["epoch"]), int(meta["oseq"]), key[0], key[1])
        last = self._last(path, meta.get("fence", NOT_READ))
        if last is not None and not newer(last, order):
            self.fenced += 1
            self.feed.ack([key])  # the newer event of its path is ours already (committed)
            return Done([])
        self.fence[path] = order
        self.round.add(key)
        return Done([ev], payload=(key, reply, order))

    def _last(self, path: bytes, fetched: Any = NOT_READ) -> tuple[str, int, int, int] | None:
        """The order of the path's last event: ours (this round's, the state file's) or, with leases, the shared
        fence (``fetched``: read by the feed with the message), whichever is later."""
        if path in self.fence:
            return self.fence[path]
        assert self.db is not None
        row = self.db.execute("SELECT epoch, oseq, part, sseq FROM consume_fence WHERE path=?", (path,)).fetchone()
        local = None if row is None else (row[0], row[1], row[2], row[3])
        if self.feed.leases is None:
            return local
        # another owner may have applied a newer one since (or we are new): the shared fence, whichever is later
        if fetched is NOT_READ:  # the feed's read failed: now, from here
            shared = self.broker.call(self.feed.leases.fence_get(path))
        else:
            shared = None if fetched is None else (str(fetched[0]), int(fetched[1]), int(fetched[2]), int(fetched[3]))
        if local is None or (shared is not None and newer(local, shared)):
            return shared
        return local

    def flush(self) -> str | None:
        # every work() of the round is done and its commit (record) comes next: from then on the state file
        # has the fence, and the next round reads it there
        self.fence.clear()
        self.round.clear()
        now = time.monotonic()
        if self.pending and now >= self._next_release and self.ctx is not None:
            # the runner says what its readers released only every few seconds (state pruning); the server
            # holds the messages until we acknowledge them (--max-pending), so look at their marks more often
            self._next_release = now + RELEASE_EVERY
            through = self.ctx.throughs()
            if through:
                self._acknowledge(min(through.values()))
        return None

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        if outcome.payload is None:  # not from our feed, or fenced
            return
        key, reply, order = outcome.payload
        if order is None:  # a redelivery of a message we hold: its newest reply subject acknowledges it (the
            # feed holds it already; released in this round's flush, the row is gone and this changes nothing)
            db.execute("UPDATE consume_pending SET reply=? WHERE part=? AND sseq=?", (reply, *key))
            return
        seq = outcome.outputs[0]["hop"]["seq"]
        path = E.get_path(item.event, "path")
        db.execute(
            "INSERT OR REPLACE INTO consume_pending(seq, part, sseq, reply, path, epoch, oseq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, *key, reply, path, order[0], order[1]),
        )
        db.execute(
            "INSERT INTO consume_fence(path, epoch, oseq, part, sseq) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET epoch=excluded.epoch, oseq=excluded.oseq, part=excluded.part, "
            "sseq=excluded.sseq",
            (path, *order),
        )
        assert self.ctx is not None  # known once the line is committed: a redone commit gives it another seq
        self.ctx.after_commit(lambda: self._emitted(key, seq, path, order))

    def _emitted(self, key: tuple[int, int], seq: int, path: bytes, order: tuple[str, int, int, int]) -> None:
        self.pending[key] = seq
        self.applied[key] = (path, order)
        self.emitted += 1

    def released(self, seq: int) -> None:
        """The runner: our readers are done with our lines up to ``seq`` (or, with no File Conveyor reader, they
        were written long ago).  With readers, what counts is how far they and every stage after them are
        (``through``): a worker lost for good takes what its later stages held with it, which the server must
        still deliver to another (docs/scale-out.md)."""
        through = self.ctx.throughs() if self.ctx is not None else {}
        self._acknowledge(min(through.values()) if through else seq)

    def _acknowledge(self, seq: int, wait: bool = False) -> None:
        """Every File Conveyor stage after us is done with our lines up to ``seq``: their messages are
        acknowledged to the server."""
        done = [key for key, s in self.pending.items() if s <= seq]
        if not done or self.ctx is None:
            return
        if self.feed.leases is not None:
            # the shared fence first: a message acknowledged before it was stored could come back (an
            # acknowledgement the server lost) to a new owner that cannot tell it was applied
            items = [self.applied[k] for k in sorted(done, key=self.pending.__getitem__) if k in self.applied]
            items = [(path, order) for path, order in items if self.feed.owns(order[2])]
            try:
                self.broker.call(self.feed.leases.fence_put(items))
            except Exception as exc:  # not stored: not acknowledged either; tried again at the next look
                self.ctx.rep.warn_once(
                    "fence", f"{self.broker.target.shown}: the shared fence: {exc or type(exc).__name__}"
                )
                return
        self.feed.ack(done, wait)
        with self.ctx.transaction() as db:
            db.execute("DELETE FROM consume_pending WHERE seq<=?", (seq,))
        for key in done:
            del self.pending[key]
            self.applied.pop(key, None)

    def progress(self) -> str:
        text = (
            f"{self.emitted} emitted, {len(self.pending)} awaiting the next stage, {self.fenced} stale dropped, "
            f"{self.feed.redelivered} delivered again by the server"
        )
        return text if self.feed.keys is None else f"{text}, {self.feed.refused} refused (not signed by our keys)"

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.rep.info(self.progress())
        if self.ctx is not None and self.pending:
            through = self.ctx.throughs()
            if through:
                self._acknowledge(min(through.values()), wait=True)
        self.feed.close()
        self.broker.close()

    def counts(self) -> dict[str, Any]:
        return {"emitted": self.emitted, "fenced": self.fenced, "again": self.again}
