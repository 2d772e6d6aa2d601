"""fc-transport: put each file on every destination, take it away again when it is deleted.

One lane per destination, with a pool of as many transporters as the destination's ``connections``
(transport_pool.py): a slow or dead server only holds up its own lane (the runner pauses it with back-off and
jitter and probes with one item), never the others.  Connections are reused across files; a transporter
reconnects by itself after a drop.  Items are keyed by source path, so the events of one path are
applied in order even with many connections.

What the state file holds besides the runner's inbox and outbox:

- ``remote_names``: (source path, server) -> the remote path last uploaded for it, so a ``deleted`` event
  removes the right file and a rename (unique_filename) removes the old one;
- ``intended``: the names a round copying small files at once is about to upload to (each file there, of its
  size), committed before the copies and gone with the round's commit (``work_ahead``, ``recorded``): a process
  killed in between leaves them, and its successor deletes such a name for a deletion nothing else names
  (fc-watch re-sends a file created and deleted meanwhile as its deletion alone, so the created line the killed
  process took never comes again);
- ``failed``: events that failed for good on one server, replayed by ``--retry-failed``;
- ``old_deletions``: superseded remote files waiting for ``--delete-old-after`` (see transport_old.py);
- ``invalidations``: CDN paths (cf://) waiting to be purged, in batches (see transport_purge.py).

The names are also kept in memory (a dict per destination) because worker threads must not use the state
connection: workers update the dict as soon as a transfer is done, ``record`` writes the rows in the
transaction that finishes the item, and a crash in between redoes the item from the inbox.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING

from ... import backoff
from ... import events as E
from ...delivery.stage import Done, Item, Outcome, Retry, Stage, StageContext
from ...digests import blake2b
from ...roots import Source as SourceRoot
from ...roots import confined
from ...sourcefile import Roots, Source, SourceRefused, from_event, usual_source
from ...state import default_state_dir
from ...transporters import UNCHANGED, AuthError, PermanentError, SourceMissing, TransientError, Transporter
from ...transporters.base import parent_dirs, safe_rel
from ..process.refs import parse_references
from . import pins as transport_pins
from .check import check_access
from .copier import Copy, Lane, Steps, drive, resume
from .dest import Target
from .old import OldFileDeleter, Pending
from .pool import Pool
from .purge import Purger
from .turns import Turns

if TYPE_CHECKING:
    from .record import RecordDb

ONLY = "_fc_transport_only"  # on an event replayed by --retry-failed: the one server it failed on
# ONLY's value is "<_REPLAY>:<server>": an input line may carry the field too (a stage before may write anything,
# and unknown fields pass through), and one that could set it sent a file to one server only, or (a name given to
# no --to) to none and no line out: so only this process's replays, which know this random tag, are taken
_REPLAY = os.urandom(16).hex()  # (not secrets: it imports hashlib, OpenSSL's 5 MB: tests/cli/test_startup.py)
_PROC = os.urandom(8).hex()  # this process, in the intended table's rows (work_ahead)
STRIPES = 1024
TROUBLE_WINDOW = 0.4  # seconds after a transient failure during which a lane's items don't try to connect

MIGRATIONS = [
    """
    CREATE TABLE remote_names(path BLOB NOT NULL, server TEXT NOT NULL, remote BLOB NOT NULL,
                              uploaded_at REAL NOT NULL, PRIMARY KEY(path, server));
    CREATE TABLE failed(id INTEGER PRIMARY KEY, server TEXT NOT NULL, path BLOB NOT NULL, line BLOB NOT NULL,
                        error TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX failed_path ON failed(path, server);
    CREATE TABLE old_deletions(id INTEGER PRIMARY KEY, server TEXT NOT NULL, path BLOB NOT NULL,
                               remote BLOB NOT NULL, due REAL NOT NULL);
    """,
    # the source's fields (source, root, rel) for the event that reports the deletion; NULL in older rows
    """
    ALTER TABLE old_deletions ADD COLUMN event BLOB;
    CREATE TABLE invalidations(id INTEGER PRIMARY KEY, server TEXT NOT NULL, path TEXT NOT NULL, at REAL NOT NULL);
    """,
    transport_pins.MIGRATION,  # old names kept while a published stylesheet references them (transport_pins.py)
    # directories fc-transport created (relative to the destination root): removed when a deletion empties them
    """
    CREATE TABLE made_dirs(server TEXT NOT NULL, dir BLOB NOT NULL, PRIMARY KEY(server, dir));
    """,
    # the names a round is about to upload to, committed before its copies (work_ahead): a process killed before
    # the round's commit leaves them, and the next one deletes such a name when only the deletion comes again
    """
    CREATE TABLE intended(server TEXT NOT NULL, path BLOB NOT NULL, remote BLOB NOT NULL, proc TEXT NOT NULL,
                          PRIMARY KEY(server, path));
    """,
]
# Fields of an event kept for the one reporting the later deletion of its superseded remote name.
SOURCE_FIELDS = ("source", "root", "root_b64", "path", "path_b64", "rel", "rel_b64")


class Note:
    """What work() did that record() must write down (keyed by the item)."""

    __slots__ = (
        "changed",
        "failed",
        "held",
        "made",
        "old_row",
        "path",
        "pin_changes",
        "purge",
        "released",
        "remote",
        "server",
        "source",
        "superseded",
        "unmade",
    )

    def __init__(
        self,
        server: str,
        path: bytes,
        remote: bytes | None = None,  # uploaded under this name (None: deleted)
        superseded: bytes | None = None,  # the previous remote name, to delete later
        failed: str | None = None,  # the error, for the failed table
        changed: bool = True,  # the remote name differs from the one in remote_names (or there is none)
        purge: Sequence[str] = (),  # CDN paths to invalidate (cf)
        old_row: int | None = None,  # a superseded name deleted later: its old_deletions row, done now
        source: bytes | None = None,  # the source fields of the event (JSON), for a superseded name's deletion later
        held: bool = False,  # the superseded name is pinned by a published stylesheet: kept until released
        # (remote name of a stylesheet, what it references now or None when deleted), to store in table pins
        pin_changes: Sequence[tuple[bytes, frozenset[transport_pins.Ref] | None]] = (),
        released: Sequence[transport_pins.Ref] = (),  # names no published stylesheet references now
        made: Sequence[bytes] = (),  # directories the upload created
        unmade: Sequence[bytes] = (),  # directories of ours the deletion emptied, removed
    ):
        # (the sequences are only read once given: an empty tuple, not a new list per note, when there are none)
        self.server = server
        self.path = path
        self.remote = remote
        self.superseded = superseded
        self.failed = failed
        self.changed = changed
        self.purge = purge
        self.old_row = old_row
        self.source = source
        self.held = held
        self.pin_changes = pin_changes
        self.released = released
        self.made = made
        self.unmade = unmade


SHOWN_FAILURES = 3  # files that failed for good named on stderr, per destination; then only the summary


class LaneStats:
    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.unchanged = 0
        self.deleted = 0
        self.failed = 0
        self.refused = 0  # of the failed: names refused as bad input (not kept for --retry-failed)
        self.unknown = 0  # deletions of files no name is known for (not deleted)
        self.first_failure = ""
        self.broken: str | None = None  # an AuthError: the destination refuses us
        self.trouble_at = 0.0  # monotonic time of the last transient failure


class Names:
    """(server, source path) -> remote name, plus how many paths use each remote name."""

    def __init__(self) -> None:
        self.by_path: dict[tuple[str, bytes], bytes] = {}
        self.users: Counter[tuple[str, bytes]] = Counter()

    def set(self, server: str, path: bytes, remote: bytes | None) -> bytes | None:
        key = (server, path)
        old = self.by_path.pop(key, None)
        users = self.users
        if old is not None:
            was = (server, old)
            left = users[was] - 1
            if left > 0:
                users[was] = left
            else:
                del users[was]
        if remote is not None:
            self.by_path[key] = remote
            now = (server, remote)
            users[now] = users.get(now, 0) + 1
        return old


class TransportStage(Stage):
    name = "fc-transport"
    migrations = MIGRATIONS

    def __init__(
        self,
        targets: list[Target],
        *,
        delete_old_after: float = 0.0,
        retry_failed: bool = False,
        record_db: str | None = None,
        drain_timeout: float = 120.0,
        work_dirs: Sequence[str] = (),
        sources: Sequence[SourceRoot] = (),
        follow_symlinks: bool = False,
    ):
        self.targets = {t.name: t for t in targets}
        # where a processed file (an event's "file") may lie: see sourcefile.from_event; the state file's
        # directory is added in start()
        self.work_bases = [os.fsencode(os.path.abspath(d)) for d in (*work_dirs, default_state_dir())]
        self.sources = list(sources)  # --source: the only roots read from (none given: the event's root)
        self.follow_symlinks = follow_symlinks
        self.delete_old_after = delete_old_after
        self.retry_failed = retry_failed
        self.record_db = record_db
        self.drain_timeout = drain_timeout
        self.names = Names()
        self.pins = transport_pins.Pins()
        self.lock = threading.Lock()
        self.stripes = [threading.Lock() for _ in range(STRIPES)]
        self.pools = {name: Pool(t.make, t.connections) for name, t in self.targets.items()}
        self.turns = Turns((name, t.connections) for name, t in self.targets.items() if t.cls.takes_turns)
        self.quick_works = bool(self.turns.lanes)  # small files to a local folder: copied in quick() (turns.py)
        self.main_tps: dict[str, Transporter] = {}  # the main thread's own, for the items it works (turns.py)
        self.copiers: dict[str, Lane] = {}  # the processes copying small files beside it (copier.py)
        self.offered = 0  # uploads the main thread could have handed to a copier this round (copier.START_AT)
        self.retry_round: str | None = None  # a copied file's item must be retried: flush() retries the round
        self.roots = Roots()  # the source roots its transporters keep open for a round (sourcefile.Roots)
        self._ahead = threading.local()  # a worker's own connection to the state file (_pin_ahead)
        self.failed_keys: set[tuple[str, bytes]] = set()  # (server, path) with rows in the failed table
        self._names: list[tuple] = []  # remote_names rows of the open transaction, for recorded(): one statement
        self.intended: dict[tuple[str, bytes], bytes] = {}  # (server, path) -> name: a killed process's rounds'
        self._intending = False  # rows of ours in the intended table (work_ahead): gone with the round's commit
        self.made: set[tuple[str, bytes]] = set()  # (server, dir): directories we created (the made_dirs table)
        self.stats = {name: LaneStats() for name in self.targets}
        self.ctx: StageContext | None = None
        self.old: OldFileDeleter | None = None
        self.purger: Purger | None = None
        self.recdb: RecordDb | None = None
        if record_db:  # the records package only for the runs that read one (start-up time)
            from .record import RecordDb

            self.recdb = RecordDb(record_db)
        # url() needs no connection: one unconnected transporter per destination serves every thread
        self.url_of = {name: t.make() for name, t in self.targets.items()}

    # -- set-up --------------------------------------------------------------------------

    def lanes(self) -> dict[str, int]:
        return {name: t.connections for name, t in self.targets.items()}

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.work_bases.append(os.fsencode(ctx.state_path.parent.absolute()))
        # Log in everywhere before any event is read: a refusal is exit 3 now, not a failure per file later.
        for name, tp in check_access(list(self.targets.values()), ctx.rep.warn).items():
            self.pools[name].adopt(tp)
        if self.recdb is not None and self.recdb.unreachable:
            ctx.rep.warn(f"--record-db: {self.recdb.unreachable}; uploads go on, and deletions wait until it answers")
        db = ctx.db
        for path, server, remote in db.execute("SELECT path, server, remote FROM remote_names"):
            self.names.set(server, bytes(path), bytes(remote))
        # (a process of ours never commits a row of its own for longer than a round: these are a killed one's)
        self.intended = {
            (server, bytes(p)): bytes(r) for server, p, r in db.execute("SELECT server, path, remote FROM intended")
        }
        self.pins.load(db)
        self.made = {(server, bytes(d)) for server, d in db.execute("SELECT server, dir FROM made_dirs")}
        self.old = OldFileDeleter(self._make, self._in_use, self._stripe, ctx.rep.warn, ctx.rep.info, self._old_deleted)
        rows = db.execute(
            "SELECT id, server, path, remote, due, event, held FROM old_deletions ORDER BY due"
        ).fetchall()
        for rid, server, path, remote, due, source, held in rows:
            if held and self.pins.pinned(server, bytes(path), bytes(remote)):
                continue  # a published stylesheet still references it: released when it is published again
            if server in self.targets:
                self.old.add(Pending(due, rid, server, bytes(remote), bytes(path), bytes(source or b"")))
        if rows:
            ctx.rep.info(f"{len(rows)} superseded remote file(s) wait to be deleted")
        self.old.start()
        # at the end of the input, the run waits (within --drain-timeout) for deletions falling due meanwhile
        ctx.add_timed(self.old, "superseded remote file(s) to delete (--delete-old-after)")
        self.purger = Purger(self._make, ctx.rep.warn, ctx.rep.info)
        rows = db.execute("SELECT id, server, path FROM invalidations ORDER BY id").fetchall()
        for rid, server, cdn_path in rows:
            if server in self.targets:
                self.purger.add(server, rid, cdn_path)
        if rows:
            ctx.rep.info(f"{len(rows)} CDN invalidation(s) from an earlier run wait to be sent")
        self.purger.start()
        ctx.add_timed(self.purger, "CDN invalidation(s) to send")
        if self.retry_failed:
            self._replay_failed(ctx)
        self.failed_keys = {(server, bytes(path)) for server, path in db.execute("SELECT server, path FROM failed")}

    def _replay_failed(self, ctx: StageContext) -> None:
        db = ctx.db
        rows = db.execute("SELECT id, server, line FROM failed ORDER BY id").fetchall()
        replay, ids, skipped = [], [], 0
        for rid, server, line in rows:
            if server not in self.targets:
                skipped += 1
                continue
            try:
                ev = E.decode(bytes(line))
            except E.EventError:
                continue
            ev[ONLY] = f"{_REPLAY}:{server}"
            replay.append(ev)
            ids.append(rid)
        # into the inbox and out of the failed list in one transaction
        ctx.enqueue(replay, lambda tx: tx.executemany("DELETE FROM failed WHERE id=?", [(i,) for i in ids]))
        if replay:  # nothing to say when nothing failed: --retry-failed is on at every fc-conveyor start
            ctx.rep.warn(f"--retry-failed: {len(replay)} failed transfer(s) queued again")
        if skipped:
            ctx.rep.warn(f"--retry-failed: {skipped} failed on destinations not given now; kept for later")

    # -- splitting and working -------------------------------------------------------------

    def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
        path = E.get_path(event, "path")
        only = event.get(ONLY)  # (never passed on: _steps drops it, and _added sees it)
        if only is not None and type(only) is str:
            tag, _, only = only.partition(":")
            if tag == _REPLAY:  # --retry-failed's (an input line's is ignored: see _REPLAY)
                return [(only, path, event)] if only in self.targets else []
        if "error" in event:
            # failed upstream (fc-process): nothing to send; passed on once, in its path's order
            return [(next(iter(self.targets)), path, event)]
        return [(name, path, event) for name in self.targets]

    def quick(self, item: Item) -> Done | None:
        if "error" in item.event:
            return Done([{k: v for k, v in item.event.items() if k != "hop" and k != ONLY}])
        if not self.turns.in_main(item):
            return None
        # a small file to a local folder: copied now, by this thread, with a transporter of its own (turns.py)
        server = item.lane
        tp = self.main_tps.get(server)
        if tp is None:
            tp = self.main_tps[server] = self.targets[server].make()
            tp.roots = self.roots  # the sources' roots, held for the round (closed in flush())
        lane = self.copiers.get(server)
        if lane is not None and lane.pending and (item.event.get("kind") == "deleted" or item.key in lane.paths):
            self._finish(server, lane)  # the lane's copies so far first: this item comes after them
            if server in self.turns.off:
                return None
        steps = self._steps(item, tp)
        try:
            copy = next(steps)
        except StopIteration as stop:
            outcome = stop.value
        else:
            outcome = self._hand_over(item, steps, copy)
        if isinstance(outcome, Done):
            return outcome
        self.turns.off.add(server)  # a worker tries it again, and the lane's next ones, until one gets through
        return None

    def _hand_over(self, item: Item, steps: Steps, copy: Copy) -> Outcome:
        """The upload ``steps`` asked for: to the lane's copier (its outcome comes in flush()), or done here."""
        server = item.lane
        lane = self.copiers.get(server)
        if not copy.alone or copy.look_first:
            if lane is not None and lane.pending:
                self._finish(server, lane)
            return drive(steps, copy)
        self.offered += 1
        if lane is None:  # the first small copy: the copier starts beside the main thread's first ones (copier.py)
            lane = self.copiers[server] = Lane(self._warn)
        usable = lane.usable(self.offered)  # else none, not yet, or behind: this one is the main thread's to copy
        try:
            prep = copy.tp.prepare(copy.source, copy.remote)  # type: ignore[attr-defined]
        except BaseException as exc:
            return resume(steps, exc=exc)  # what the upload would have raised, where it would have
        if prep is None:
            return drive(steps, copy)  # not a plain copy (prepare says): upload() does it
        made = copy.tp.take_made_dirs() if copy.has_dirs else []
        if not usable:
            return lane.copy_here(steps, copy, prep, made)
        return lane.add(steps, copy, prep, item, made)

    def _finish(self, server: str, lane: Lane) -> None:
        """Finish the items ``lane``'s copier has: a transient failure retries the round (flush) and leaves the
        lane to the workers until one gets a file through, as in quick()."""
        reasons = lane.finish(self._internal)
        if reasons:
            self.turns.off.add(server)
            self.retry_round = self.retry_round or reasons[0]

    def _internal(self, item: Item, exc: BaseException) -> Done:
        """An item whose steps failed unexpectedly after its copy: as the runner reports a stage's bug."""
        if self.ctx is not None:
            self.ctx.rep.error(f"{E.display(E.get_path(item.event, 'path'))}: unexpected failure: {exc}")
        out = {k: v for k, v in item.event.items() if k != "hop"}
        return Done([{**out, "error": f"internal error: {exc}", "error_kind": "internal"}], failed=True)

    def flush(self) -> str | None:
        self.offered = 0
        for server, lane in self.copiers.items():
            self._finish(server, lane)  # every copy of the round done before its commit
        self.roots.close()  # the end of a round's quick(): the roots are opened afresh in the next one
        reason, self.retry_round = self.retry_round, None
        return reason

    def work(self, item: Item) -> Outcome:
        turn = self.turns.lock_for(item)  # a small file to a local folder: one worker at a time (turns.py)
        if turn is None:
            outcome = self._work(item)
        else:
            with turn:
                outcome = self._work(item)
        if item.lane in self.turns.off and isinstance(outcome, Done) and not outcome.failed:
            self.turns.off.discard(item.lane)
        return outcome

    def _work(self, item: Item) -> Outcome:
        if "error" in item.event:
            return self.quick(item)  # type: ignore[return-value]
        return drive(self._steps(item))

    def _steps(self, item: Item, own: Transporter | None = None) -> Steps:
        """What ``work`` does for ``item``, as steps that yield the upload they need (copier.py): done at once
        (``drive``), or by the lane's copier process while the main thread goes on (``quick``).  ``own``: the
        main thread's own transporter, in quick(); else one of the lane's pool."""
        server = item.lane
        # One copy is both the event read and the one written: what is read of it (root, rel, size...) is never
        # what is added (server, remote, url, transported)
        ev = out = item.event.copy()
        out.pop("hop", None)
        out.pop(ONLY, None)
        out["server"] = server
        path = item.key  # (split's: the event's path)
        stats = self.stats[server]
        kind = ev.get("kind")
        try:
            remote, source = self._names_of(ev, kind)
            if source is not None and source.work:
                self._refuse_own(server, ev)
            if kind == "deleted" and self._still_there(ev):
                self._warn(f"{E.display(path)}: not deleted: the file is still at the source (a stale or forged event)")
                return Done([])
        except (PermanentError, SourceRefused) as exc:
            # Bad input, not a transfer that failed: refused, and not kept for --retry-failed.
            stats.refused += 1
            self._failed(server, f"{E.display(path)}: {exc}")
            return Done([{**out, "error": str(exc), "error_kind": "permanent"}], failed=True)
        if source is not None and remote is source.rel and "rel_b64" not in ev:
            out["remote"] = ev["rel"]  # (what put_path would store: the string remote was encoded from)
            out.pop("remote_b64", None)
        else:
            E.put_path(out, "remote", remote)
        try:
            if stats.broken is not None:
                raise AuthError(stats.broken)
            if time.monotonic() - stats.trouble_at < TROUBLE_WINDOW:
                # Items handed out before the runner paused the lane: put them back without a connection
                # attempt each (the runner's probe comes later than this window).
                return Retry(f"{self.targets[server].dest}: another connection just failed", lane=True)
            if source is not None:
                return (yield from self._upload(item, ev, out, server, path, remote, source, own))
            if kind == "deleted":
                return self._delete(item, out, server, path, remote, own)
            raise PermanentError(f"unknown event kind {kind!r} (expected created, modified or deleted)")
        except SourceMissing as exc:
            if ("file" in ev or "file_b64" in ev) and os.path.lexists(path):
                return self._copy_lost(item, out, server, path, exc)
            # Not worth retrying: the file is gone or is another one now (or changed while it was sent), and
            # fc-watch reports a deleted or modified event for it next.
            self._info(f"{E.display(path)}: skipped, {exc}")
            if item.recovered and source is not None:
                return self._maybe_sent(ev, server, path, remote, own)
            return Done([])
        except TransientError as exc:
            stats.trouble_at = time.monotonic()
            return Retry(str(exc), lane=True)
        except PermanentError as exc:
            if isinstance(exc, AuthError) and stats.broken is None:
                # Every other item would fail the same way: stop knocking (no retry storm), say it once.
                stats.broken = str(exc)
                if self.ctx is not None:
                    self.ctx.rep.error(f"{exc}; everything for {server} fails until fixed (then --retry-failed)")
            if stats.broken is None:
                self._failed(server, str(exc))
            else:
                stats.failed += 1
            out["error"] = str(exc)
            out["error_kind"] = "permanent"
            return Done([out], failed=True, payload=Note(server, path, failed=str(exc)))

    def work_ahead(self, items: list[Item]) -> Callable[[sqlite3.Connection], None] | None:
        """The names this round's uploads go to, committed before the main thread copies any file (Intake.begin_work,
        with the working marks): killed before the round's commit, this process leaves a copy at the destination
        that nothing records, and when its file is deleted meanwhile fc-watch sends only the deletion again (its
        rows hold a file's last event); without the name that deletion removed nothing ("not deleted: no upload
        of it is known", a copy left for good).  The rows go with the round's commit (``recorded``): its uploads
        are recorded then, or queued in the inbox.  Only a name the round can really upload to is written: its
        file at the source as the line says (a regular file of its size), the checks of the upload passed.  A
        forged created line for a file that is not there (its ``name`` the administrator's index.html) uploads
        nothing, and its row, left by any kill of that round, made a forged deletion remove that page.  (Our
        previous round's rows go here too when its commit failed.)"""
        rows = []
        for item in items:
            ev = item.event
            kind = ev.get("kind")
            if (kind == "created" or kind == "modified") and "error" not in ev:
                try:
                    remote, source = self._names_of(ev, kind)
                    if source is None:
                        continue
                    st = os.stat(source.path)
                except (PermanentError, SourceRefused, E.EventError, OSError):
                    continue  # refused or skipped when the item is worked: nothing uploaded
                if stat.S_ISREG(st.st_mode) and source.size in (None, st.st_size):
                    rows.append((item.lane, item.key, remote, _PROC))
        if not rows and not self._intending:
            return None

        def write(db: sqlite3.Connection) -> None:
            if self._intending:
                db.execute("DELETE FROM intended WHERE proc=?", (_PROC,))
            if rows:
                db.executemany("INSERT OR REPLACE INTO intended(server, path, remote, proc) VALUES (?, ?, ?, ?)", rows)
            self._intending = bool(rows)

        return write

    def _usual_remote(self, ev: dict, source: Source) -> bytes:
        """The remote name of a usual event (usual_source's): without a ``name``, or with fc-process's name that
        is the rel's own last step, its rel (what remote_path gives then)."""
        name = ev.get("name", _NO_NAME)
        if "name_b64" not in ev and (name is _NO_NAME or name == ev["rel"].rpartition("/")[2]):
            return source.rel
        return remote_path(ev)

    def _names_of(self, ev: dict, kind: object) -> tuple[bytes, Source | None]:
        """``ev``'s remote name and, to upload (created, modified), its file, checked in this order before anything
        is opened: PermanentError, SourceRefused.  The usual event (plain strings) is checked in one pass
        (sourcefile.usual_source); without a ``name``, or with the rel's last step as its name, its remote name is
        its rel (what remote_path gives then)."""
        if kind != "created" and kind != "modified":
            return remote_path(ev), None
        usual = usual_source(ev)
        if usual is None:
            return remote_path(ev), self._source(ev)
        source = usual[1]
        return self._usual_remote(ev, source), self._source(ev, source)

    def _source(self, ev: dict, source: Source | None = None) -> Source:
        """The file to send, checked (sourcefile.py; ``source``: from_event's already); with --source, only beneath
        one of those roots, since an event's root is as forgeable as the rest of it."""
        if source is None:
            source = from_event(ev, self.work_bases)
        if self.follow_symlinks and not _has_file(ev):
            source = source.replace(links_out_ok=True)
        return confined(source, ev, self.sources, "fc-transport")

    def _refuse_own(self, server: str, ev: dict) -> None:
        """A processed copy's event whose own file lies at the destination ``server`` (a folder inside the tree it
        is sent from, through fc-process): PermanentError, as the transporter refuses such a file sent as it is
        (refuse_own), since its copy there comes back as a new file of the tree, processed and sent again a level
        deeper, for ever.  The transporter sees only the work copy: the event's own path is looked at here."""
        plain = {k: v for k, v in ev.items() if k not in ("file", "file_b64")}  # the source's name, not the copy
        try:
            own = from_event(plain)
        except SourceRefused:
            return  # no root to tell (a hand-written line): the work copy is checked as it is
        self.url_of[server].refuse_own(own.root, own.rel)

    def _still_there(self, ev: dict) -> bool:
        """For a deletion: is its file still at the source?  Its source checked against --source first, as for an
        upload (SourceRefused): a deletion is as forgeable as the rest of an event.  Only a regular file counts
        (one replaced by a directory or a link is gone as far as the destination is concerned)."""
        plain = {k: v for k, v in ev.items() if k not in ("file", "file_b64")}  # the source's name, not a work copy
        try:
            found = from_event(plain)
        except SourceRefused:
            if self.sources:
                raise
            return False  # a hand-written deletion (no root) without --source: nothing to check it against
        source = confined(found, ev, self.sources, "fc-transport")
        try:
            return stat.S_ISREG(os.lstat(source.path).st_mode)
        except OSError:
            return False

    def _upload(
        self,
        item: Item,
        ev: dict,
        out: dict,
        server: str,
        path: bytes,
        remote: bytes,
        source: Source,
        own: Transporter | None,
    ) -> Generator[Copy, tuple[str, list[bytes]], Done]:
        purge: list[str] = []
        refs = parse_references(ev) if "references" in ev else None  # (a stylesheet's: most files have none)
        changes: list[tuple[bytes, frozenset[transport_pins.Ref] | None]] = []
        released: list[transport_pins.Ref] = []
        ahead: frozenset[transport_pins.Ref] = frozenset()
        if refs is not None:
            with self.lock:  # pinned before the stylesheet is visible, in one step with the check
                stale = self.pins.stale(server, refs, self.names.by_path)
                if not stale:
                    before = self.pins.by_css.get((server, remote), frozenset())
                    ahead = before | frozenset(refs)
                    self.pins.set(server, remote, ahead)  # its old content is there meanwhile
            if stale:
                ref, name = stale[0]
                self._info(
                    f"{E.display(path)}: not sent: it references {E.display(name)}, an old name of"
                    f" {E.display(ref)} (the stylesheet is processed again for its new name)"
                )
                return Done([])
            changes.append((remote, frozenset(refs)))
            self._pin_ahead(server, remote, ahead)
        with self._connection(server, own) as tp:
            with self._locked(server, remote):
                # an item from the inbox at start may have been sent by a process killed before it recorded
                # that: where the transporter can tell, the destination is looked at before sending again
                # alone: no stylesheet pins, no old name to delete, no lock held, so a copier may do it
                alone = (
                    refs is None
                    and not self.delete_old_after
                    and self.names.by_path.get((server, path)) in (None, remote)
                )
                sent, made = yield Copy(tp, source, remote, item.recovered, tp.has_dirs, alone)
                with self.lock:
                    old = self.names.set(server, path, remote)
                    if refs is not None:
                        released = self.pins.set(server, remote, refs)
                    if made:
                        self.made.update((server, d) for d in made)
            if sent != UNCHANGED or item.recovered:  # the killed process's purge was not recorded either
                purge += tp.invalidation_paths(remote)
            superseded = old if old is not None and old != remote else None
            held = False
            if superseded is not None:
                with self.lock:
                    held = self.pins.pinned(server, path, superseded)
            if superseded is not None and not held and not self.delete_old_after:
                with self._locked(server, superseded):
                    if not self._in_use(server, superseded):
                        tp.delete(superseded)  # a TransientError retries the item: uploading again is harmless
                        purge += tp.invalidation_paths(superseded)
                        with self.lock:  # an old stylesheet gone: what it referenced may go too
                            released += self.pins.set(server, superseded, None)
                            changes.append((superseded, None))
                superseded = None
        stats = self.stats[server]
        if sent == UNCHANGED:
            stats.unchanged += 1
        else:
            stats.files += 1
            stats.bytes += ev["size"] if isinstance(ev.get("size"), int) else 0
        out["url"] = tp.url(remote)
        out["transported"] = sent
        if source.work:
            # the size of the processed copy sent, for fc-record's remote_size: it looked the file up itself, at
            # whatever path a line named (a hung mount wedged it; any file's size went into the record)
            with contextlib.suppress(OSError):
                out["remote_size"] = os.stat(source.path).st_size
        note = Note(server, path, remote, superseded, changed=old != remote, purge=purge, held=held)
        note.made, note.pin_changes, note.released = made, changes, released
        if superseded is not None:
            note.source = E.encode({k: ev[k] for k in SOURCE_FIELDS if k in ev} | {"v": 1, "kind": "modified"})
        return Done([out], payload=note, added=_added(item.event, out))

    def _pin_ahead(self, server: str, css: bytes, refs: frozenset[transport_pins.Ref]) -> None:
        """The pins of a stylesheet about to be sent, committed to the state file before it is visible at the
        destination.  Written only with the round's commit, they died with a process killed between the upload
        and that commit: the stylesheet stayed published, and the next run, not knowing what it references,
        deleted such an old name at once (tests/durability/test_css_soak.py saw it).  Its own connection per
        worker thread: the main loop's is its own; the round's commit then writes the exact pins."""
        assert self.ctx is not None
        conn = getattr(self._ahead, "conn", None)
        try:
            if conn is None:
                conn = sqlite3.connect(self.ctx.state_path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA synchronous=NORMAL")  # as the state's own: WAL, a process crash loses nothing
                self._ahead.conn = conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                transport_pins.save(conn, server, css, refs)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:  # the state file busy past the timeout: the stylesheet waits, unsent
            raise TransientError(f"recording what the stylesheet references: {exc}") from None

    def _delete(self, item: Item, out: dict, server: str, path: bytes, remote: bytes, own: Transporter | None) -> Done:
        # Only a name File Conveyor put there is deleted, never the event's own choice (`name`, `rel`): a forged
        # line could otherwise remove any file at the destination, an administrator's index.html say.  The name
        # this fc-transport uploaded (remote_names), else the one fc-record recorded (--record-db: uploaded by an
        # earlier state, another worker of a scaled-out pipeline, the old daemon).
        with self.lock:
            known = self.names.by_path.get((server, path))
        try:
            recorded = self._recorded_name(server, path) if known is None else None
            # else a name a killed process of ours was about to upload to (work_ahead): it may have
            intended = self.intended.get((server, path)) if known is None and recorded is None else None
            remote = known or recorded or intended or remote
            E.put_path(out, "remote", remote)
            out["url"] = self.url_of[server].url(remote)
            kept = self.recdb is not None and self.recdb.kept(out)
        except TransientError as exc:
            # fc-record's database server does not answer (record.py): this deletion waits for it, and what comes
            # after it for its path; the destination is fine, so its lane is not paused (its uploads go on)
            return Retry(str(exc), after=backoff.delay(item.attempts, 1.0, 60.0, jitter=True))
        if kept:
            # fc-record deleted the source after sync: the remote copy stays (fileDeletionDelayAfterSync)
            out["transported"] = "kept"
            return Done([out])
        if known is None and recorded is None and intended is None:
            self._unknown_deletion(server, path)
            return Done([])
        with self._locked(server, remote):
            with self.lock:  # another source path may have the same remote name: then it stays
                live = self.names.users.get((server, remote), 0) - (known == remote) > 0
            purge: list[str] = []
            note = Note(server, path, purge=purge)
            if not live:
                with self._connection(server, own) as tp:
                    tp.delete(remote)
                    purge += tp.invalidation_paths(remote)
                    note.unmade = self._remove_empty_dirs(tp, server, remote)
                with self.lock:  # a stylesheet gone references nothing
                    note.released = self.pins.set(server, remote, None)
                    note.pin_changes = [(remote, None)]
            with self.lock:  # only now: a failed delete is retried with the name still known
                self.names.set(server, path, None)
        self.stats[server].deleted += 1
        out["transported"] = "deleted"
        return Done([out], payload=note)

    def _maybe_sent(self, ev: dict, server: str, path: bytes, remote: bytes, own: Transporter | None) -> Done | Retry:
        """A file gone from the source before a process of ours, killed, could record its upload (``recovered``:
        Intake's working marks): that process may have put it at ``remote``.  Known as this path's name, its
        deletion (which follows) removes it: a deletion removes only a name File Conveyor put there, and one it
        did not know of stayed there for good (a kill between an upload and its commit, then the file deleted).

        Only when the destination holds a file at ``remote`` of the line's ``size``: what the killed process could
        have written there (an upload sends only the file of the event's size, sourcefile.py).  A line is forgeable,
        and one read within WORKING_AHEAD seqs of the mark after a restart comes as recovered too: without the look,
        one forged created line (a missing file, name index.html) and a forged deletion removed the
        administrator's index.html.  A processed copy (``file``) is of another size than the line's: its name is
        not taken (a copy may stay, an "extra"; never someone else's file deleted)."""
        with self.lock:
            if self.names.by_path.get((server, path)) is not None:
                return Done([])  # a name is known: the deletion removes that one
        size = ev.get("size")
        if _has_file(ev) or type(size) is not int:
            return Done([])
        try:
            with self._connection(server, own) as tp:
                there = tp.stat(remote)
                # symlink_within: a link to this very source file (dangling now) is File Conveyor's, whatever its size
                ours = there.size == size if there is not None else _links_to(tp, remote, path)
        except TransientError as exc:  # (raised here, inside _steps' handler, it would escape as an internal error)
            self.stats[server].trouble_at = time.monotonic()
            return Retry(str(exc), lane=True)  # the look is done again: the deletion behind it waits for it
        except PermanentError:
            return Done([])
        if not ours:
            return Done([])  # nothing of ours there (or not what that process could have sent): nothing to name
        with self.lock:
            if self.names.by_path.get((server, path)) is not None:
                return Done([])
            self.names.set(server, path, remote)
        return Done([], payload=Note(server, path, remote))

    def _recorded_name(self, server: str, path: bytes) -> bytes | None:
        """The remote name fc-record's record holds for ``path`` on ``server`` (None without --record-db or row),
        checked as an event's name is: the record is read, not trusted to stay beneath the destination (nor to
        hold text: records.model.remote_name).  A record that cannot be read fails the deletion (PermanentError,
        kept for --retry-failed); a server that does not answer makes it wait (TransientError)."""
        if self.recdb is None:
            return None
        try:
            name = self.recdb.remote(path, server)  # (PermanentError here: the record cannot be read)
        except ValueError as exc:
            name, refused = None, str(exc)
        else:
            if name is None:
                return None
            try:
                return safe_rel(name)
            except PermanentError as exc:
                refused = str(exc)
        self._warn(f"{E.display(path)}: the name --record-db holds for it on {server} is refused: {refused}")
        return None

    def _remove_empty_dirs(self, tp: Transporter, server: str, remote: bytes) -> list[bytes]:
        """Remove the directories above ``remote`` that this deletion left empty, deepest first, as long as
        fc-transport created them (never the root, nor a directory someone else made); the ones removed.
        A failure here leaves the directory: the file's deletion, done, is what matters."""
        removed: list[bytes] = []
        for d in reversed(parent_dirs(remote)):
            with self.lock:
                if (server, d) not in self.made:
                    break
            try:
                if not tp.remove_dir(d):
                    break  # not empty: another file is in it (or arrived meanwhile)
            except (TransientError, PermanentError) as exc:
                self._info(f"{exc}: the directory stays")
                break
            with self.lock:
                self.made.discard((server, d))
            removed.append(d)
        return removed

    def _old_deleted(self, p: Pending, purge: list[str]) -> None:
        """The deleter thread deleted a superseded remote name: report it with an event of its own.

        kind ``modified`` (the change that superseded the name), ``transported: "deleted"`` and ``superseded:
        true``: fc-record passes it on without touching the row of the file's current name, which a ``deleted``
        event would remove.  Its old_deletions row goes in the transaction that writes the event."""
        try:
            ev = E.decode(p.source) if p.source else {}
        except E.EventError:
            ev = {}
        if "path" not in ev and "path_b64" not in ev:
            ev = {"v": 1, "kind": "modified"}
            E.put_path(ev, "path", p.path)
        digest = blake2b(b"superseded\0%s\0%s\0%s" % (p.server.encode(), p.path, p.remote), digest_size=16)
        out = {"v": 1, "id": digest.hexdigest(), "kind": "modified", **{k: ev[k] for k in SOURCE_FIELDS if k in ev}}
        out["server"] = p.server
        E.put_path(out, "remote", p.remote)
        out["url"] = self.url_of[p.server].url(p.remote)
        out["transported"] = "deleted"
        out["superseded"] = True
        note = Note(p.server, p.path, purge=purge, old_row=p.row, pin_changes=[(p.remote, None)])
        with self.lock:  # an old stylesheet gone: what it referenced may go too
            note.released = self.pins.set(p.server, p.remote, None)
        if self.ctx is not None:
            self.ctx.emit([out], also=lambda db: self._write_note(db, note, {}))

    # -- recording -----------------------------------------------------------------------

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        note = outcome.payload
        if isinstance(note, Note):
            self._write_note(db, note, item.event)
        else:
            self._finished_rows(db)

    def _finished_rows(self, db: sqlite3.Connection) -> None:
        """Remove the rows the timed threads are done with (deletions without an event, invalidations sent); if
        the transaction is rolled back, the threads get them back, for the transaction that does it again."""
        assert self.ctx is not None
        # (their lists looked at without the threads' locks first, as this runs with every item: one filled just
        # after the look is taken with a later item, or at the end)
        if self.old is not None and self.old.done:
            done = self.old.take_done()
            if done:
                db.executemany("DELETE FROM old_deletions WHERE id=?", [(i,) for i in done])
                self.ctx.on_rollback(lambda old=self.old: old.give_back(done))
        if self.purger is not None and self.purger.sent_rows:
            sent = self.purger.take_sent()
            if sent:
                db.executemany("DELETE FROM invalidations WHERE id=?", [(i,) for i in sent])
                self.ctx.on_rollback(lambda purger=self.purger: purger.give_back(sent))

    def _write_note(self, db: sqlite3.Connection, note: Note, event: dict) -> None:
        """The rows of what work() did (``note``) for the item of ``event``.  The threads and the sets in memory
        learn of them only once they are committed (``after_commit``): a rolled-back commit, done again, must
        not hand them an id that no row has, nor the same path twice."""
        assert self.ctx is not None
        self._finished_rows(db)
        if note.made:
            db.executemany(
                "INSERT OR IGNORE INTO made_dirs(server, dir) VALUES (?, ?)", [(note.server, d) for d in note.made]
            )
        if note.unmade:
            db.executemany("DELETE FROM made_dirs WHERE server=? AND dir=?", [(note.server, d) for d in note.unmade])
        if note.purge and self.purger is not None:
            now = time.time()
            rows = []
            for cdn_path in note.purge:
                cur = db.execute(
                    "INSERT INTO invalidations(server, path, at) VALUES (?, ?, ?)", (note.server, cdn_path, now)
                )
                rows.append((int(cur.lastrowid or 0), cdn_path))
            purger = self.purger

            def to_purge() -> None:
                for rid, cdn_path in rows:
                    purger.add(note.server, rid, cdn_path)

            self.ctx.after_commit(to_purge)
        for css_remote, refs in note.pin_changes:
            transport_pins.save(db, note.server, css_remote, refs)
        if note.released:
            self._release(db, note.server, note.released)
        if note.old_row is not None:
            db.execute("DELETE FROM old_deletions WHERE id=?", (note.old_row,))
            return
        key = (note.server, note.path)
        if note.failed is not None:
            # the latest failure of a path is the one that matters: replaying it gives the path's final state
            db.execute("DELETE FROM failed WHERE path=? AND server=?", (note.path, note.server))
            self.ctx.after_commit(lambda: self.failed_keys.add(key))
            line = E.encode({k: v for k, v in event.items() if k not in ("hop", ONLY)})
            db.execute(
                "INSERT INTO failed(server, path, line, error, at) VALUES (?, ?, ?, ?, ?)",
                (note.server, note.path, line, note.failed, time.time()),
            )
            return
        if key in self.failed_keys:  # a set in memory: most items never failed, and this saves a query each
            db.execute("DELETE FROM failed WHERE path=? AND server=?", (note.path, note.server))
            self.ctx.after_commit(lambda: self.failed_keys.discard(key))
        if self.intended and key in self.intended:  # a killed process's intended name: uploaded or deleted now
            db.execute("DELETE FROM intended WHERE server=? AND path=?", key)
            self.ctx.after_commit(lambda: self.intended.pop(key, None))
        if note.remote is None:
            self.recorded(db)  # (the rows gathered before it, in their order)
            db.execute("DELETE FROM remote_names WHERE path=? AND server=?", (note.path, note.server))
            return
        if not note.changed:
            return
        if not self._names:  # rolled back (or a redone item's savepoint): the rows gathered go with it
            self.ctx.on_rollback(self._names.clear)
        self._names.append((note.path, note.server, note.remote, time.time()))
        if self.delete_old_after or note.held or self.pins.count:  # a name in use again is no longer old
            db.execute("DELETE FROM old_deletions WHERE server=? AND remote=?", (note.server, note.remote))
        if note.superseded is not None and self.old is not None:
            due = time.time() + self.delete_old_after
            cur = db.execute(
                "INSERT INTO old_deletions(server, path, remote, due, event, held) VALUES (?, ?, ?, ?, ?, ?)",
                (note.server, note.path, note.superseded, due, note.source, int(note.held)),
            )
            if not note.held:
                rid = int(cur.lastrowid or 0)
                later = Pending(due, rid, note.server, note.superseded, note.path, note.source or b"")
                self.ctx.after_commit(lambda old=self.old: old.add(later))

    def recorded(self, db: sqlite3.Connection) -> None:
        """The remote_names rows record() gathered, in one statement (was one per file); and the intended names
        of the round (work_ahead) gone with its commit: each upload is recorded now, or queued in the inbox.
        Left until the next round, they outlived the round for as long as no line came, and a kill -9 while idle
        (a reboot) left a forged line's name for a forged deletion."""
        if self._names:
            rows, self._names = self._names, []
            db.executemany(
                "INSERT INTO remote_names(path, server, remote, uploaded_at) VALUES (?, ?, ?, ?) ON CONFLICT(path, "
                "server) DO UPDATE SET remote=excluded.remote, uploaded_at=excluded.uploaded_at",
                rows,
            )
        if self._intending:
            assert self.ctx is not None
            db.execute("DELETE FROM intended WHERE proc=?", (_PROC,))
            self.ctx.after_commit(self._intended_gone)

    def _intended_gone(self) -> None:
        self._intending = False

    def _release(self, db: sqlite3.Connection, server: str, released: Sequence[transport_pins.Ref]) -> None:
        """Schedule the held old names no published stylesheet references any more."""
        if not released or self.old is None or self.ctx is None:
            return
        due = time.time() + self.delete_old_after
        later = []
        for rid, path, remote, source in transport_pins.held_rows(db, server, released):
            with self.lock:
                if self.pins.pinned(server, path, remote):
                    continue  # pinned again meanwhile
            db.execute("UPDATE old_deletions SET held=0, due=? WHERE id=?", (due, rid))
            later.append(Pending(due, rid, server, remote, path, source))
        old = self.old

        def to_delete() -> None:
            for p in later:
                old.add(p)

        if later:
            self.ctx.after_commit(to_delete)

    def progress(self) -> str:
        parts = []
        for name, s in self.stats.items():
            text = f"{name}: {s.files} files {_size(s.bytes)}"
            if s.unchanged:
                text += f" {s.unchanged} unchanged"
            if s.deleted:
                text += f" {s.deleted} deleted"
            if s.failed:
                text += f" {s.failed} failed"
            parts.append(text)
        waiting = self.old.pending() if self.old is not None else 0
        if waiting:
            parts.append(f"{waiting} old to delete")
        purging = self.purger.pending() if self.purger is not None else 0
        if purging:
            parts.append(f"{purging} to invalidate")
        return ", ".join(parts)

    def _copy_lost(self, item: Item, out: dict, server: str, path: bytes, exc: Exception) -> Done:
        """The processed copy is gone but the source is not: no deleted event will follow, so this is a file
        lost, never dropped quietly (it was an info line, and a retry after a wrong password sent nothing)."""
        text = (
            f"{E.display(path)}: not sent: its processed copy is gone ({exc}) while the file is still there; "
            "touch the file to have it processed and sent again"
        )
        with self.lock:
            stats = self.stats[server]
            stats.failed += 1
            stats.first_failure = stats.first_failure or text
        if self.ctx is not None:
            self.ctx.rep.error(text)
        return Done(
            [{**out, "error": text, "error_kind": "source"}], failed=True, payload=Note(server, path, failed=text)
        )

    def _failed(self, server: str, text: str) -> None:
        """A file that failed for good: on stderr for the first few (the event carries every one), and in the
        summary at the end (close())."""
        with self.lock:
            stats = self.stats[server]
            stats.failed += 1
            stats.first_failure = stats.first_failure or text
            shown = stats.failed <= SHOWN_FAILURES
        if shown and self.ctx is not None:
            self.ctx.rep.warn(f"not sent: {text}")

    def _unknown_deletion(self, server: str, path: bytes) -> None:
        """A deletion of a file File Conveyor is not known to have put on ``server``: nothing is deleted (a stale
        remote copy costs a clean-up, a wrong deletion someone's file).  Said for the first few, then counted."""
        with self.lock:
            stats = self.stats[server]
            stats.unknown += 1
            shown = stats.unknown <= SHOWN_FAILURES
        if shown and self.ctx is not None:
            if self.recdb is None:
                where = "--state (give --record-db to ask fc-record's)"
            elif self.recdb.missing():  # fc-record has not made it yet, or a misspelt path: worth seeing
                where = f"--state, and --record-db {self.recdb.target} is not there"
            else:
                where = "--state and --record-db"
            self.ctx.rep.warn(
                f"{E.display(path)}: not deleted from {server}: no upload of it is known to {where}; "
                "a deletion removes only what File Conveyor put there"
            )

    def _failure_summary(self) -> None:
        for name, s in self.stats.items():
            if s.unknown > SHOWN_FAILURES and self.ctx is not None:
                self.ctx.rep.warn(f"{name}: {s.unknown} deletion(s) of files with no known upload left undone")
            if not s.failed or s.broken is not None or self.ctx is None:
                continue  # a refused login was said once already, and says what to do
            text = f"{name}: {s.failed} file(s) not sent (first: {s.first_failure})"
            kept = s.failed - s.refused
            if kept:
                text += f"; {kept} kept in the state file: fix the cause, then run fc-transport --retry-failed"
            self.ctx.rep.warn(text)

    def close(self) -> None:
        self._failure_summary()
        # The runner's loop has ended: it waited for what fell due within the drain time (add_timed).  A
        # deletion the thread is carrying out still emits its event (StageContext.emit commits it at once now).
        if self.old is not None:
            self.old.close()
        if self.purger is not None:
            self.purger.close()
        if self.ctx is not None:
            self.ctx.emit([], also=self._finished_rows)  # the rows the threads finished since the last commit
        for pool in self.pools.values():
            pool.close()
        for tp in self.main_tps.values():
            tp.close()
        for lane in self.copiers.values():
            lane.stop()  # every round ended with its answers (flush): nothing of ours is left in it
        self.roots.close()
        if self.recdb is not None:
            self.recdb.close()

    # -- helpers -------------------------------------------------------------------------

    def _connection(self, server: str, own: Transporter | None) -> contextlib.AbstractContextManager[Transporter]:
        if own is not None:  # the main thread working an item itself (quick): its own transporter
            return contextlib.nullcontext(own)
        return self._pooled(server)

    @contextlib.contextmanager
    def _pooled(self, server: str) -> Iterator[Transporter]:
        asked = time.monotonic()
        with self.pools[server].get() as tp:
            stats = self.stats[server]
            # What happened while this thread waited for a connection: don't knock again, leave it to the
            # runner's back-off (a server down) or fail at once (a server that refused us).
            if stats.broken is not None:
                raise AuthError(stats.broken)
            if stats.trouble_at > asked:
                raise TransientError(f"{self.targets[server].dest}: another connection just failed; backing off")
            yield tp

    def _make(self, server: str) -> Transporter:
        return self.targets[server].make()

    def _in_use(self, server: str, remote: bytes) -> bool:
        return self.names.users.get((server, remote), 0) > 0

    def _stripe(self, server: str, remote: bytes) -> threading.Lock:
        return self.stripes[hash((server, remote)) % STRIPES]

    def _locked(self, server: str, remote: bytes) -> threading.Lock | _NoLock:
        # Only needed when a delayed deletion could race an upload of the same name.
        return self._stripe(server, remote) if self.delete_old_after else _NO_LOCK

    def _info(self, text: str) -> None:
        if self.ctx is not None:
            self.ctx.rep.info(text)

    def _warn(self, text: str) -> None:
        if self.ctx is not None:
            self.ctx.rep.warn(text)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
_NO_NAME = object()  # an event without "name" (one with "name": null is remote_path's to refuse)


# What _work adds to an uploaded file's event, in this order (remote_b64: a remote name that is not UTF-8)
# (and remote_size, after them, for a processed copy)
ADDED = ("server", "remote", "url", "transported")
ADDED_B64 = ("server", "remote", "remote_b64", "url", "transported")
_SIZED = {ADDED: (*ADDED, "remote_size"), ADDED_B64: (*ADDED_B64, "remote_size")}
_OURS = frozenset((*ADDED_B64, "remote_size", ONLY))


def _added(event: dict, out: dict) -> tuple[str, ...]:
    """The fields ``out`` has besides those of ``event`` (Done.added: its line is the event's with them), or ()
    when ``event`` had one of them already (its value, or its place, differs in ``out``): then it is encoded."""
    if not _OURS.isdisjoint(event):
        return ()
    added = ADDED_B64 if "remote_b64" in out else ADDED
    return _SIZED[added] if "remote_size" in out else added


def _links_to(tp: Transporter, remote: bytes, path: bytes) -> bool:
    """Whether ``remote`` is the link a local destination's symlink_within makes to ``path`` (the source's real
    path, as upload() links it: its directories still there)."""
    links_to = getattr(tp, "links_to", None)
    return links_to is not None and bool(links_to(remote, os.path.realpath(path)))


def _has_file(ev: dict) -> bool:
    return "file" in ev or "file_b64" in ev


def remote_path(ev: dict) -> bytes:
    """Where the file goes under the destination root: dirname(``rel``) + ``name`` (else the base name of
    ``rel``); PermanentError for anything that could leave the root."""
    if "rel" not in ev and "rel_b64" not in ev:
        raise PermanentError("the event has no 'rel' (path relative to the source root): nowhere to put it")
    rel = E.get_path(ev, "rel")
    head, _, base = rel.rpartition(b"/")
    name = E.get_path(ev, "name") if ("name" in ev or "name_b64" in ev) else base
    # (find, not "in": bytes.__contains__ first tries its argument as an int, and builds and drops a TypeError)
    if name.find(b"/") >= 0 or name in (b"", b".", b"..") or name.find(b"\0") >= 0:
        raise PermanentError(f"refusing remote name {name!r}: a base name may not be empty, '.', '..' or hold '/'")
    return safe_rel(head + b"/" + name if head else name)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
