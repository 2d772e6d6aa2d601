"""The logic of fc-watch, independent of how changes are noticed.

Backends (inotify, FSEvents, polling) only give *hints*: "this path may have
changed" (``dirty``) or "look at this whole directory again" (``rescan``).  The
truth comes from comparing what is on disk now with the state file, at the
moment an event is due.  That one rule gives the behaviour users rely on:

- bursts coalesce (a hint for a path already pending only moves its deadline);
- created-then-deleted before it settled yields nothing (no row, no file);
- renames and moves are deletions of old paths plus creations of new ones;
- an overflowed event queue costs a rescan, never a lost change;
- a kill -9 at any moment re-emits, on restart, whatever was not written yet.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import Stopped
from ...events import FileEventEncoder
from ...plain import Value
from ...watchers.links import UNKNOWN, Skipped, resolve
from ...watchers.tree import Filters, subtree_range, to_key, to_rel
from .scan import Batch, ScanJob, plan, run_jobs
from .state import CREATED, DELETED, MODIFIED, SKIPPED, SKIPPED_GONE, WatchState, encode_row, judge

if TYPE_CHECKING:
    from ...watchers.base import Backend


class Source(Value):
    _fields = ("name", "root", "index", "prefix")

    def __init__(self, name: str, root: bytes, index: int = 0, prefix: bytes = b""):
        self.name = name
        self.root = root  # absolute, no trailing slash (except "/")
        self.index = index
        self.prefix = prefix  # its key prefix in the state file (WatchState.bind_source)


class Pending:
    """A path with a hint, waiting for its writer to finish."""

    __slots__ = ("closed", "deadline", "last_activity", "last_stat", "seq")

    def __init__(
        self,
        deadline: float,
        last_activity: float,
        closed: bool | None,  # True: writer closed it; False: still being written; None: unknown
        last_stat: tuple[int, int, int] | None = None,
        seq: int = 0,
    ):
        self.deadline = deadline
        self.last_activity = last_activity
        self.closed = closed
        self.last_stat = last_stat
        self.seq = seq


class Options:
    def __init__(self, settle: float = 0.25, open_wait: float = 30.0, follow_symlinks: bool = False, jobs: int = 1):
        self.settle = settle  # quiet time after the last change before a file is emitted
        self.open_wait = open_wait  # a file still open for writing is emitted after this much quiet
        self.follow_symlinks = follow_symlinks
        self.jobs = jobs  # processes for whole-tree scans


class Counters:
    def __init__(self) -> None:
        self.created = 0
        self.modified = 0
        self.deleted = 0
        self.scanned = 0
        self.rescans = 0
        self.skipped = 0  # symlinks leading outside, reported as not published


class Core:
    """Pending hints, scans, and the emission of events (stdout first, state after)."""

    def __init__(
        self,
        sources: list[Source],
        state: WatchState,
        filters: Filters,
        options: Options,
        on_unreadable: Callable[[Source, bytes, OSError], None] | None = None,
        on_skipped: Callable[[Source, bytes, bool], None] | None = None,
    ):
        self.sources = sources
        self.state = state
        self.filters = filters
        self.opt = options
        self.on_unreadable = on_unreadable
        self.on_skipped = on_skipped  # (source, rel, was published): say it, once per link
        self.unreadable: set[tuple[int, bytes]] = set()  # directories a scan could not list
        self.counts = Counters()
        self._pending: dict[tuple[int, bytes], Pending] = {}
        self._heap: list[tuple[float, int, tuple[int, bytes]]] = []
        self._seq = itertools.count()
        self._rescans: dict[tuple[int, bytes], None] = {}  # ordered set of (source, rel_dir)
        self._scanning = False
        self._touched: set[tuple[int, bytes]] = set()
        self.via = "scan"  # what found changes that hints led to (the backend's name)
        self.scan_via = "scan"  # what found changes that scans led to
        self.on_progress: Callable[[], None] | None = None  # called now and then during scans
        # Set by live backends: a hook run for every directory a scan enters (add a
        # watch, before listing it) returning a note, and where notes are applied.
        self.dir_hook: Callable[[Source], Callable[[bytes, bytes], object]] | None = None
        self.apply_note: Callable[[Source, object], None] | None = None
        self.between_batches: Callable[[], None] | None = None  # e.g. read the inotify queue
        self.should_stop: Callable[[], bool] | None = None  # scans raise errors.Stopped when it says so
        self._encoders: dict[tuple[int, str], FileEventEncoder] = {}

    # -- hints from backends ---------------------------------------------------------

    def dirty(self, src: Source, rel: bytes, closed: bool | None, now: float | None = None) -> None:
        """Something happened to file ``rel`` of ``src``; look at it once it settles."""
        if self.filters.skip_path(rel):
            return
        now = time.monotonic() if now is None else now
        k = (src.index, to_key(rel))
        p = self._pending.get(k)
        if p is None:
            p = Pending(0.0, now, closed)
            self._pending[k] = p
        else:
            p.last_activity = now
            if closed is not None:
                p.closed = closed
        wait = self.opt.settle
        if p.closed is False:
            wait = max(wait, self.opt.open_wait)
        self._schedule(k, p, now + wait)

    def rescan(self, src: Source, rel_dir: bytes) -> None:
        """Compare the whole directory ``rel_dir`` (recursively) with the state soon."""
        anc = rel_dir
        while True:  # already covered by a queued rescan of it or of a directory above?
            if (src.index, anc) in self._rescans:
                return
            if not anc:
                break
            anc = anc.rpartition(b"/")[0]
        self._rescans[(src.index, rel_dir)] = None

    def distrust_pending(self) -> None:
        """Events were lost (queue overflow): what pending paths were waiting for (a
        close that may never come) is unknown, so judge each by its stat settling."""
        now = time.monotonic()
        for k, p in self._pending.items():
            p.closed, p.last_stat = None, None
            self._schedule(k, p, now + self.opt.settle)

    def rescan_all(self) -> None:
        self._rescans.clear()
        for src in self.sources:
            self._rescans[(src.index, b"")] = None

    # -- timing ----------------------------------------------------------------------

    def _schedule(self, k: tuple[int, bytes], p: Pending, deadline: float) -> None:
        p.deadline = deadline
        p.seq = next(self._seq)
        heapq.heappush(self._heap, (deadline, p.seq, k))

    def next_deadline(self) -> float | None:
        """When tick() has work next (monotonic seconds), None when nothing is pending."""
        if self._rescans:
            return 0.0
        heap = self._heap
        while heap:
            deadline, seq, k = heap[0]
            p = self._pending.get(k)
            if p is not None and p.seq == seq:
                return deadline
            heapq.heappop(heap)
        return None

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def scanning(self) -> bool:
        """A scan is being applied: its worker processes may have added watches (dir_hook) whose notes
        (apply_note) come with a later batch."""
        return self._scanning

    def tick(self, now: float | None = None) -> None:
        """Run queued rescans, then emit every pending path whose time has come."""
        while self._rescans:
            (index, rel_dir) = next(iter(self._rescans))
            del self._rescans[(index, rel_dir)]
            self.scan(self.sources[index], rel_dir)
        now = time.monotonic() if now is None else now
        heap, pending = self._heap, self._pending
        while heap and heap[0][0] <= now:
            _, seq, k = heapq.heappop(heap)
            p = pending.get(k)
            if p is None or p.seq != seq:
                continue
            self._settle(k, p, now)
        self.state.maybe_commit()

    def _settle(self, k: tuple[int, bytes], p: Pending, now: float) -> None:
        src = self.sources[k[0]]
        rel = to_rel(k[1])
        cur = resolve(src.root, rel, self.opt.follow_symlinks)
        if cur == UNKNOWN:  # cannot look (permissions): the state stays; look again later
            self._schedule(k, p, now + max(1.0, self.opt.settle))
            return
        # Nobody told us the writer is done: wait until size and mtime hold still.
        if (
            cur is not None
            and not isinstance(cur, Skipped)  # a link is whole when it appears: nothing to wait for
            and self.opt.settle > 0
            and p.closed is not True
            and p.last_stat != cur
        ):
            p.last_stat = cur
            self._schedule(k, p, now + self.opt.settle)
            return
        del self._pending[k]
        if self._scanning:
            self._touched.add(k)
        self._reconcile(src, k[1], cur)

    def _reconcile(self, src: Source, key: bytes, cur: tuple[int, int, int] | Skipped | None) -> None:
        old = self.state.lookup(src.prefix, key)
        if cur is None:
            if old is not None:
                self._emit(DELETED, src, key, old[:3])
            return
        kind = judge(
            None if old is None else old[3], old is not None and old[:3] == tuple(cur), isinstance(cur, Skipped)
        )
        if kind is not None:
            self._emit(kind, src, key, tuple(cur))

    def _emit(self, kind: int, src: Source, key: bytes, st: tuple[int, int, int], via: str | None = None) -> None:
        # stdout first, state second: a crash in between re-emits, it never loses.
        via = via or self.via
        encode = self._encoders.get((src.index, via))
        if encode is None:
            encode = self._encoders[(src.index, via)] = FileEventEncoder(src.name, src.root, via)
        # the line is held with the row, and written once the row is committed
        self.state.put(src.prefix, key, st, kind, encode_row(encode, kind, to_rel(key), *st))
        self._count(src, key, kind, 1)

    def _count(self, src: Source, key: bytes, kind: int, n: int) -> None:
        c = self.counts
        if kind == CREATED:
            c.created += n
        elif kind == MODIFIED:
            c.modified += n
        elif kind == DELETED:
            c.deleted += n
        else:  # a symlink leading outside: never published, said once (the row remembers it)
            c.skipped += n
            if self.on_skipped is not None:
                self.on_skipped(src, to_rel(key), kind == SKIPPED_GONE)

    # -- scanning --------------------------------------------------------------------

    def scan(self, src: Source, rel_dir: bytes = b"") -> None:
        """Compare directory ``rel_dir`` of ``src`` (recursively) with the state.

        Files whose mtime is older than the settle time are emitted at once; recent
        ones may still be being written and become pending.  Paths with a pending
        hint, or emitted by a hint while this scan ran, are left to that hint.
        A whole-tree scan of a large tree runs in ``jobs`` processes.
        """
        self.counts.rescans += 1
        lo, hi = subtree_range(rel_dir)
        job = ScanJob(
            src.name,
            src.index,
            src.prefix,
            src.root,
            self.state.path,
            rel_dir,
            lo,
            hi,
            self.filters,
            self.opt.follow_symlinks,
            int(self.opt.settle * 1e9),
            self.scan_via,
            self.dir_hook(src) if self.dir_hook else None,
            self.should_stop,
        )
        self.state.commit()  # jobs read committed rows
        jobs = plan(job, self.opt.jobs * 4) if self.opt.jobs > 1 else [job]
        batches = run_jobs(jobs, self.opt.jobs, self.between_batches, self.should_stop)
        self._scanning = True
        self._touched.clear()
        try:
            for batch in batches:
                self._apply(src, batch)
                if self.should_stop is not None and self.should_stop():
                    raise Stopped  # what is applied is in the state; the rest waits for the next scan
        finally:
            self._scanning = False
            self._touched.clear()
        self.state.maybe_commit()

    def _apply(self, src: Source, batch: Batch) -> None:
        """Write a scan batch's lines and record its rows, leaving paths with newer hints alone."""
        index, pending, touched, state = src.index, self._pending, self._touched, self.state
        if self.apply_note is not None:
            for note in batch.notes:
                self.apply_note(src, note)
        for rel, err, message in batch.errors:
            self.unreadable.add((src.index, rel))
            if self.on_unreadable is not None:
                self.on_unreadable(src, rel, OSError(err, message))
        c, prefix, kinds = self.counts, src.prefix, batch.kinds
        if not pending and not touched:  # nothing newer to respect: apply the batch whole
            state.put_many(prefix, batch.keys, [batch.row(i) for i in range(len(batch.keys))], batch.lines)
            c.created += kinds.count(CREATED)
            c.modified += kinds.count(MODIFIED)
            c.deleted += kinds.count(DELETED)
            if kinds.count(SKIPPED) or kinds.count(SKIPPED_GONE):
                for i, key in enumerate(batch.keys):
                    if kinds[i] == SKIPPED or kinds[i] == SKIPPED_GONE:
                        self._count(src, key, kinds[i], 1)
        else:
            for i, key in enumerate(batch.keys):
                if (index, key) in pending or (index, key) in touched:
                    continue
                row = batch.row(i)
                state.put(prefix, key, row[:3], row[3], batch.lines[i])
                self._count(src, key, kinds[i], 1)
        for key, st in batch.pending:
            k = (index, key)
            if k in pending or k in touched:
                continue
            self.dirty(src, to_rel(key), None)
            self._pending[k].last_stat = st
        c.scanned += batch.scanned
        if state.dirty >= state.commit_every:
            state.maybe_commit()
        if self.on_progress is not None:
            self.on_progress()
        if self.between_batches is not None:
            self.between_batches()

    def drain(self, should_stop: Callable[[], bool]) -> None:
        """Wait for every pending path to settle and emit it, then commit (--scan-once)."""
        while self._pending and not should_stop():
            self.tick()
            nd = self.next_deadline()
            if nd is not None:
                time.sleep(max(0.0, min(nd - time.monotonic(), 0.2)))
        self.state.commit()


def run_live(
    core: Core,
    backend: Backend,
    should_stop: Callable[[], bool],
    wake_fds: list[int],
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Watch until asked to stop: catch-up scan, then hints -> settled events."""
    import select

    backend.start()
    core.state.commit()
    if on_ready is not None:
        on_ready()
    poller = select.poll()
    fd = backend.fileno()
    for f in ([fd] if fd is not None else []) + wake_fds:
        poller.register(f, select.POLLIN)
    while not should_stop():
        now = time.monotonic()
        due = [t for t in (core.next_deadline(), backend.next_due()) if t is not None]
        # at least once a second: a restarted reader is re-sent what it lost (check_readers)
        timeout_ms = 1000 if not due else min(1000, max(0, int((min(due) - now) * 1000) + 1))
        poller.poll(timeout_ms)
        if should_stop():
            break
        backend.process()
        core.tick()
        core.state.commit()  # events of this round are out: make them part of the state
        core.state.check_readers()
    core.state.commit()
