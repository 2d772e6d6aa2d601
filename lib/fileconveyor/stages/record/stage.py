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

An event with an ``order`` (a non-negative integer: a later event of the same path has a larger one; set where
events of a path may arrive out of order, as from many workers) is applied only when no later one was applied
for that file and server (``Record.claim``): an older event never overwrites a newer one, it is passed on and
counted ``stale``.  Events without ``order`` are applied as they come.

``--delete-source-after``: see delete.py.  The required servers are ``--require-server`` or else every
server this fc-record has seen (kept in the state file's ``servers_seen``).
"""

from __future__ import annotations

import json
import os
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

if TYPE_CHECKING:
    from .delete import SourceDeleter

NOT_SYNCED = (
    "skipped",
    "failed",
    "deleted",
    "kept",
)  # transported values of a created/modified that is not on the server


def error_text(err: Any) -> str:
    """The message of an ``error`` field: a string (fc-transport) or an object with ``message`` (docs/events.md)."""
    if isinstance(err, dict):
        return str(err.get("message") or json.dumps(err, ensure_ascii=False))
    return str(err)


def _int(value: Any) -> int | None:
    if type(value) is int:  # the usual case first (a bool is no int here: its type is bool)
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _maybe_path(ev: dict, field: str) -> str | bytes | None:
    if field not in ev and field + "_b64" not in ev:
        return None
    try:
        return _key(ev, field)
    except E.EventError:
        return None


def _key(ev: dict, field: str) -> str | bytes:
    """db_key(E.get_path(ev, field)), without the round trip through bytes for a plain string (events.decode has
    refused every string UTF-8 cannot carry, so the bytes would decode to the same text)."""
    if field + "_b64" not in ev:
        value = ev.get(field)
        if type(value) is str:
            return value
    return db_key(E.get_path(ev, field))


def _base(key: str | bytes) -> str | bytes:
    """The last component of a key as db_key gives it; of the bytes of a name that is not UTF-8, db_key's own."""
    if isinstance(key, str):
        return key.rsplit("/", 1)[-1]
    return db_key(key.rsplit(b"/", 1)[-1])


def _order(ev: dict) -> int | None:
    """The event's ``order`` (see above), None when it has none.  A malformed one counts as none."""
    value = ev.get("order")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= E.MAX_INT else None


def version_of(ev: dict) -> tuple[int | None, int | None, int | None]:
    return _int(ev.get("size")), _int(ev.get("mtime_ns")), _int(ev.get("ino"))


def synced_row(ev: dict) -> Synced:
    """The row of a synced event.  Every line fc-record records comes here: the fields are read as they are
    when they are the usual plain strings (_key), not through bytes and back."""
    remote = _key(ev, "remote") if ("remote" in ev or "remote_b64" in ev) else None
    input_file = _key(ev, "path")
    if remote is not None:
        basename = _base(remote)
    elif "name" in ev or "name_b64" in ev:
        basename = _key(ev, "name")
    else:
        basename = _base(input_file)
    processed, hash_, source, event_id = ev.get("processed"), ev.get("hash"), ev.get("source"), ev.get("id")
    return Synced(
        input_file=input_file,
        basename=basename,
        url=str(ev.get("url") or ""),
        server=str(ev["server"]),
        remote=remote,
        size=_int(ev.get("size")),
        mtime_ns=_int(ev.get("mtime_ns")),
        ino=_int(ev.get("ino")),
        remote_size=_remote_size(ev),
        hash=hash_ if isinstance(hash_, str) else None,
        processed=_processed_json(processed) if isinstance(processed, list) and processed else None,
        source=source if isinstance(source, str) else None,
        root=_maybe_path(ev, "root"),
        rel=_maybe_path(ev, "rel"),
        event_id=event_id if isinstance(event_id, str) else None,
    )


_PROCESSED: dict[tuple, str] = {}  # a chain's processor names -> their JSON: a few chains, every line


def _processed_json(processed: list) -> str:
    if not all(type(name) is str for name in processed):
        return json.dumps(processed)
    key = tuple(processed)
    text = _PROCESSED.get(key)
    if text is None:
        if len(_PROCESSED) >= 256:  # forged lines could name endless chains
            _PROCESSED.clear()
        text = _PROCESSED[key] = json.dumps(processed)
    return text


def _remote_size(ev: dict) -> int | None:
    """The size of what was sent: given by fc-transport, or the source's when nothing was processed."""
    given = _int(ev.get("remote_size"))
    if given is not None:
        return given
    if "file" not in ev and "file_b64" not in ev:
        return _int(ev.get("size"))
    try:  # the work file, if fc-process has not removed it yet
        return os.stat(E.get_path(ev, "file")).st_size
    except (OSError, E.EventError):
        return None


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
    ):
        self.db_path = db_path
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
        self.counts = {"recorded": 0, "removed": 0, "kept": 0, "failed": 0, "unrecorded": 0, "scheduled": 0, "stale": 0}
        self.rep: Any = None
        self.ctx: StageContext | None = None

    def lanes(self) -> dict[str, int]:
        return {"": 0}

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.rep = ctx.rep
        self.rec = open_writer(self.db_path)
        self.seen = {s for (s,) in ctx.db.execute("SELECT server FROM servers_seen")}
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
        try:
            return self._work(item)
        except RetryableError as exc:  # the database busy for 30 s (another writer), or a full disk
            return Retry(str(exc), after=backoff.delay(item.attempts, 2.0, 60.0))

    def _work(self, item: Item) -> Done:
        ev = item.event
        path = E.get_path(ev, "path")
        server = ev.get("server")
        assert self.rec is not None
        if isinstance(server, str) and server not in self.seen:
            self.seen.add(server)
            self.new_servers.add(server)
        order = _order(ev)
        recorded = "error" in ev or (isinstance(server, str) and bool(server))
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

    def _fresh(self, path: bytes, server: str, order: int) -> bool:
        assert self.rec is not None
        with self.rec.item():
            return self.rec.claim(db_key(path), server, order)

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
        try:
            self.rec.commit()
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

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
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
            self.rec.rollback()  # worked, but the round was never committed to the state file: it comes again
            self.rec.close()
