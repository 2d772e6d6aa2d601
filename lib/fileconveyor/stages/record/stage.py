"""fc-record: write what fc-transport did into the synced-files database, pass every event on.

Per event (one inline lane keyed by path, so the events of a file are applied in order):

- ``created``/``modified`` with a ``server`` and no ``error``: upsert the (input_file, server) row (records.py);
- ``deleted``: remove the row, unless the deletion is one fc-record made itself after sync (``transported`` is
  ``kept``, or the event is that deletion and reached us without an fc-transport deleting anything);
- an event with ``error``: upsert a ``sync_failures`` row; synced rows are left alone;
- events without ``server`` (no fc-transport before us) pass through unrecorded.

Each record is a savepoint in one transaction per round on the synced-files database (a file, or PostgreSQL:
records/), apart from the stage's state file (``Record.item``); ``flush`` commits it before the runner commits
the round's progress to the state file.  A kill in between makes the events come again, and writing them again
changes nothing (upserts), so the database needs no part in the state file's transaction.  A round whose records
could not be committed is done again, every item of it (``flush`` returns why).

The usual record, a synced file's upsert alone (no failure to clear, no deletion to void: ``Record.plain``), is
no savepoint of its own: its row (rows.py) joins the round's, written in one statement (``Record.upsert_rows``)
before any other record of the round and before the commit, so the order of a file's events holds.

An event with an ``order`` (a non-negative integer: a later event of the same path has a larger one; set where
events of a path may arrive out of order, as from many workers) is applied only when no later one was applied
for that file and server (``Record.claim``): an older event never overwrites a newer one, it is passed on and
counted ``stale``.  Events without ``order`` are applied as they come.  An order is trusted up to this host's
clock plus ``--order-skew`` in microseconds (rows.ORDER_SKEW): a line with a larger one is a bad line (split:
reported with its line number, skipped, acknowledged), and a fence already stored past that limit (written by a
version before this rule) is no fence: the next event of the file is applied and moves it back to a real order.

``--delete-source-after``: see delete.py.  The required servers are ``--require-server`` or else every
server this fc-record has seen (kept in the state file's ``servers_seen``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ... import backoff
from ... import events as E
from ...beneath import OutsideRoot, rel_parts
from ...delivery.stage import Done, Item, Retry, Stage, StageContext
from ...errors import RetryableError
from ...records import Deletion, Record, Synced, db_key, deleted_by_record, open_writer, shown
from ...roots import Source, allowed_root
from .rows import ORDER_SKEW, error_text, event_order, order_limit, synced_row, synced_values

if TYPE_CHECKING:
    from .delete import SourceDeleter

# transported values of a created/modified that is not on the server (a string or None: events.decode)
NOT_SYNCED = frozenset(("skipped", "failed", "deleted", "kept"))


class RecordStage(Stage):
    name = "fc-record"
    migrations = ("CREATE TABLE servers_seen(server TEXT PRIMARY KEY, first_seen REAL NOT NULL)",)

    def __init__(
        self,
        db_path: str,
        *,
        delete_after: float | None = None,
        require: Sequence[str] = (),
        sources: Sequence[Source] = (),
        drain: float = 120.0,
        stopped: Callable[[], bool] = lambda: False,
        order_skew: float = ORDER_SKEW,
    ):
        self.db_path = db_path
        self.order_skew = order_skew
        self.delete_after = delete_after
        self.require = list(dict.fromkeys(require))
        self.sources = list(sources)  # the roots --delete-source-after may delete beneath (--source NAME=DIR)
        self.drain = drain
        self.stopped = stopped
        self.rec: Record | None = None
        self.deleter: SourceDeleter | None = None
        self.seen: set[str] = set()
        self.new_servers: set[str] = set()
        self.to_schedule: list[Deletion] = []
        # the round's plain upserts not written yet (synced_values), with their items and outcomes: _write_rows
        self.rows: list[tuple] = []
        self.row_items: list[tuple[Item, Done]] = []
        # Asked once a round, not per line: whether records may be plain at all (no --delete-source-after, a
        # writer open: start), whether they are in this round (Record.plain, None: not asked yet, forgotten
        # when a record of another kind may have changed the answer), and the round's synced_at
        self.batching = False
        self.plain: bool | None = None
        self.now = 0.0
        self.counts = {"recorded": 0, "removed": 0, "kept": 0, "failed": 0, "unrecorded": 0, "scheduled": 0, "stale": 0}
        self.rep: Any = None
        self.ctx: StageContext | None = None

    def lanes(self) -> dict[str, int]:
        return {"": 0}

    def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
        """Stage.split's one item, once the event's ``order`` is one a writer can have given: not past this host's
        clock plus --order-skew.  A larger one raises EventError, so the line is reported with its line number and
        skipped (delivery/intake.py), and acknowledged: it never reaches the fence, where it held every later event
        of its file back ("older than recorded") for good, and is not kept to come again."""
        order = event_order(event) if "order" in event else None
        if order is not None:
            limit = order_limit(self.order_skew)
            if order > limit:
                raise E.EventError(
                    f"order {order} lies {(order - limit) / 1e6 + self.order_skew:.0f} s past this host's clock "
                    f"(more than --order-skew {self.order_skew:g}): no writer's order (an order is a time in "
                    "microseconds or a count), not applied"
                )
        return [("", E.get_path(event, "path"), event)]

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.rep = ctx.rep
        self.rec = open_writer(self.db_path)
        self.batching = self.delete_after is None
        # ('' kept by an older version: no server, see _work)
        self.seen = {s for (s,) in ctx.db.execute("SELECT server FROM servers_seen") if s}
        if self.delete_after is not None:
            from .delete import SourceDeleter  # only for --delete-source-after runs (start-up time)

            self.deleter = SourceDeleter(
                self.db_path,
                str(ctx.state_path),  # the owner of the deletions it schedules: this stage
                lambda: self.require or sorted(self.seen),
                self.rep.warn,
                self.rep.info,
                self.sources,
            )
            self.deleter.start()
            if not self.require:
                self.rep.warn_once(
                    "require",
                    "--delete-source-after without --require-server: a file is deleted once it is synced to every "
                    f"server seen so far ({', '.join(sorted(self.seen)) or 'none yet'}); name them to be safe",
                )

    def work(self, item: Item) -> Done | Retry:
        ev = item.event
        get = ev.get
        server = get("server")
        try:
            if (
                server in self.seen
                and server
                and self.batching
                and "error" not in ev
                and get("order") is None
                and get("kind") != "deleted"
                and type(get("url")) is str
                and get("transported") not in NOT_SYNCED
                and (self.plain if self.plain is not None else self._plain_round())
            ):
                # the usual record, a synced file's upsert alone: its row joins the round's (_write_rows)
                done = Done([ev], unchanged=True)
                self.rows.append(synced_values(ev, self.now))
                self.row_items.append((item, done))
                return done
            self.plain = None  # what this event writes may make the round's records no longer plain (Record.added)
            self._write_rows()  # the rows before this event, before what it writes
            return self._work(item)
        except RetryableError as exc:  # the database busy for 30 s (another writer), or a full disk
            return Retry(str(exc), after=backoff.delay(item.attempts, 2.0, 60.0))

    def _plain_round(self) -> bool:
        """Record.plain, asked at the round's first synced line (it begins the round's transaction), with the
        time its rows are recorded at."""
        assert self.rec is not None
        self.plain = self.rec.plain()
        self.now = time.time()
        return self.plain

    def _work(self, item: Item) -> Done:
        ev = item.event
        path = E.get_path(ev, "path")
        server = ev.get("server")
        assert self.rec is not None
        # ('' names no destination: a failure before one was chosen, a forged line; a server seen is one a
        # deletion without --require-server waits for, and none would ever be synced to '')
        if isinstance(server, str) and server and server not in self.seen:
            self.seen.add(server)
            self.new_servers.add(server)
        order = event_order(ev)
        recorded = "error" in ev or (isinstance(server, str) and bool(server))
        # (order was within the limit at split(); past it now only if this host's clock was set back since: then
        # it is stored, and is no fence for the file's next event)
        if order is not None and recorded and not self._fresh(path, server if isinstance(server, str) else "", order):
            self.counts["stale"] += 1  # a later event of this path was applied: this one must change nothing
            return Done([ev], unchanged=True)
        if "error" in ev:
            with self.rec.item():
                self.rec.fail(db_key(path), server if isinstance(server, str) else "", self._failure(ev))
                self.rec.added("sync_failures")
            self.counts["failed"] += 1
            return Done([ev], failed=True, unchanged=True)
        if not isinstance(server, str) or not server:
            self.counts["unrecorded"] += 1
            self.rep.warn_once(
                "no-server",
                "events without a 'server' field pass through unrecorded: put fc-transport before fc-record",
            )
            return Done([ev], unchanged=True)
        if ev.get("kind") == "deleted":
            self._deleted(ev, path, server)
        elif isinstance(ev.get("url"), str) and ev.get("transported") not in NOT_SYNCED:
            self._synced(ev, path, server)
        else:
            self.counts["unrecorded"] += 1
        return Done([ev], unchanged=True)

    def _write_rows(self) -> None:
        """The round's plain upserts so far, in one statement (Record.upsert_rows).  A row the database refuses
        fails its event alone, as a failure in work() would (runner: "unexpected failure"): its outcome, not
        committed yet, says so now.  RetryableError when the round's transaction is lost: every item is redone."""
        if not self.rows:
            return
        assert self.rec is not None
        rows, items = self.rows, self.row_items
        self.rows, self.row_items = [], []
        self.counts["recorded"] += len(rows)
        for i, exc in self.rec.upsert_rows(rows):
            item, done = items[i]
            self.counts["recorded"] -= 1
            self.rep.error(f"{E.display(E.get_path(item.event, 'path'))}: unexpected failure: {exc}")
            done.outputs = [{**item.event, "error": f"internal error: {exc}", "error_kind": "internal"}]
            done.failed, done.unchanged = True, False

    def _fresh(self, path: bytes, server: str, order: int) -> bool:
        assert self.rec is not None
        with self.rec.item():
            return self.rec.claim(db_key(path), server, order, order_limit(self.order_skew))

    def _failure(self, ev: dict) -> dict[str, Any]:
        err = ev["error"]
        kind = ev.get("error_kind") or (err.get("kind") if isinstance(err, dict) else None)
        stage = err.get("stage") if isinstance(err, dict) else None
        return {
            "kind": ev.get("kind"),
            "error": error_text(err),
            "error_kind": kind,
            "stage": stage,
            "event_id": ev.get("id"),
        }

    def _synced(self, ev: dict, path: bytes, server: str) -> None:
        assert self.rec is not None
        row = synced_row(ev)
        rec = self.rec
        if self.delete_after is None and not rec.may_hold("sync_failures") and not rec.may_hold("source_deletions"):
            # no failure to clear, no deletion to void or schedule: the upsert is the whole record
            with rec.item(alone=True):
                rec.upsert(row, failures=False)
            self.counts["recorded"] += 1
            return
        version = (row.size, row.mtime_ns, row.ino)
        schedule: Deletion | None = None
        with self.rec.item():
            self.rec.upsert(row, failures=self.rec.may_hold("sync_failures"))
            old = self.rec.deletion(row.input_file)
            if old is not None and old.version != version:
                # another version at this path: the old schedule (or the record of our old deletion) is void
                self.rec.drop_deletion(row.input_file)
                old = None
            if self.delete_after is not None and old is None:
                schedule = self._schedule(ev, path, row, version)
                if schedule is not None:
                    self.rec.put_deletion(schedule)
                    self.rec.added("source_deletions")
        self.counts["recorded"] += 1
        if schedule is not None:
            self.counts["scheduled"] += 1
            self.to_schedule.append(schedule)

    def _schedule(self, ev: dict, path: bytes, row: Synced, version: tuple) -> Deletion | None:
        """A deletion to schedule now that ``row`` is recorded, or None (not synced everywhere yet, or unsafe)."""
        assert self.rec is not None and self.delete_after is not None
        if None in version or row.rel is None or row.root is None:
            self.rep.warn_once(
                "no-version", "events without size, mtime_ns, ino, root and rel are never deleted at the source"
            )
            return None
        root, rel = E.get_path(ev, "root"), E.get_path(ev, "rel")
        if E.join(root, rel) != path:
            return None  # path is not root + rel: not a file fc-watch reported, leave it alone
        try:  # the deleter checks again, on the file system: these only spare a schedule that cannot be carried out
            rel_parts(rel)
            if allowed_root(self.sources, row.source, root) is None:
                raise OutsideRoot(
                    f"source {row.source!r} with root {E.display(root)} is no --source given to fc-record"
                )
        except OutsideRoot as exc:
            # one warning, not one per forged root: the first one says what to look for
            self.rep.warn_once("outside", f"{E.display(path)}: never deleted at the source: {exc}")
            return None
        required = self.require or sorted(self.seen)
        synced = self.rec.versions(row.input_file)
        if any(synced.get(s) != version for s in required):
            return None
        now = time.time()
        return Deletion(
            row.input_file,
            list(required),
            version,
            row.source,
            row.root,
            row.rel,
            now,
            now + self.delete_after,
            None,
            None,
            self.deleter.owner if self.deleter else None,
        )

    def _deleted(self, ev: dict, path: bytes, server: str) -> None:
        assert self.rec is not None
        key = db_key(path)
        transported = ev.get("transported")
        with self.rec.item():
            ours = deleted_by_record(self.rec, ev)
            if transported == "kept" or (ours and transported is None):
                self.counts["kept"] += 1  # the source was deleted on purpose after sync: the remote copy stays
                return
            if ours:
                self.rep.warn_once(
                    "not-kept",
                    "fc-transport deleted the remote copy of a file fc-record deleted at the source after sync: "
                    f"give fc-transport --record-db {shown(self.db_path)}",
                )
            self.rec.remove(key, server)
            d = self.rec.deletion(key)
            if d is not None and d.deleted_at is None:
                self.rec.drop_deletion(key)  # the user deleted it before we did
        self.counts["removed"] += 1

    def flush(self) -> str | None:
        assert self.rec is not None
        self.plain = None  # the next round begins a transaction of its own (Record.plain)
        try:
            try:
                self._write_rows()
            finally:
                self.rec.commit()  # (after a lost round: raises that, and forgets it)
        except RetryableError as exc:
            # Their rows were rolled back, or committed early (a PostgreSQL round that met another writer commits
            # what it has: records/postgres.py), and the round done again finds those and schedules none: the
            # deleter is told of all, and a row not there when it is due is one it leaves alone.
            if self.deleter is not None:
                for d in self.to_schedule:
                    self.deleter.add(d.due_at, d.input_file)
            self.to_schedule.clear()
            return str(exc)
        return None

    def recorded(self, db: sqlite3.Connection) -> None:
        # Once a round (Stage.recorded), not a call per item (Stage.record) that has nothing of its own to write.
        # Handed to the deleter only now, once the whole round is worked: a failure for another server later in
        # the same batch has been seen by then, and the deleter checks the servers required at its time.
        if self.to_schedule and self.deleter is not None:
            for d in self.to_schedule:
                self.deleter.add(d.due_at, d.input_file)
            self.to_schedule.clear()
        if self.new_servers:
            now = time.time()
            new, self.new_servers = self.new_servers, set()
            db.executemany(
                "INSERT OR IGNORE INTO servers_seen(server, first_seen) VALUES (?, ?)", [(s, now) for s in new]
            )
            assert self.ctx is not None  # rolled back (a round redone item by item): written by the next record
            self.ctx.on_rollback(lambda: self.new_servers.update(new))

    def progress(self) -> str:
        c = self.counts
        text = f"{c['recorded']} recorded, {c['removed']} removed"
        if c["stale"]:
            text += f", {c['stale']} older than recorded (not applied)"
        if c["failed"]:
            text += f", {c['failed']} failures"
        if self.deleter is not None:
            text += f", {self.deleter.pending()} to delete at the source, {self.deleter.deleted} deleted"
        return text

    def _scheduled(self) -> int:
        """Deletions of ours still to do, as the database says (the deleter's heap may hold cancelled ones)."""
        if self.rec is None or self.deleter is None:
            return 0
        return self.rec.scheduled(self.deleter.owner)

    def close(self) -> None:
        if self.deleter is not None:
            if not self.stopped():
                # carry out what falls due while the pipeline drains, as the runner does with its retries
                self.deleter.wait_due(time.time() + self.drain, self.stopped)
            left = self._scheduled()
            if left and self.rep is not None:
                self.rep.warn(
                    f"{left} source deletion(s) still scheduled in {shown(self.db_path)}; they are carried out when "
                    "fc-record runs again with the same --state and --delete-source-after"
                )
            self.deleter.close()
        if self.rec is not None:
            self.rows.clear()
            self.row_items.clear()
            self.plain = None
            self.rec.rollback()  # worked, but the round was never committed to the state file: it comes again
            self.rec.close()
