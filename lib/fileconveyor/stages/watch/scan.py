"""Comparing a tree with the state, in one process or several.

A scan is cut into jobs by key range (see watchers/tree.py: key order is walk
order).  Each job walks its part of the tree, reads the state rows of the same
range on its own connection, and merges the two: what differs becomes an event
line, encoded by the job.  The parent process only writes the lines and records
the rows, so on a large tree the expensive part (stat, compare, encode) runs on
every core while the output stays one stream.  A tree that looks small once its first
jobs are done (PARALLEL_FROM) is scanned in one process: workers cost more than they save.

Jobs never decide alone: the parent drops a line whose path got a live hint
while the job ran (that hint is newer), so a job may run on a snapshot.
"""

from __future__ import annotations

import array
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ...children import die_with_parent
from ...errors import Stopped
from ...events import FileEventEncoder
from ...watchers.links import UNKNOWN, resolve
from ...watchers.tree import Filters, WalkHooks, to_key, to_rel, walk
from .state import DELETED, SKIPPED, SKIPPED_GONE, Row, encode_row, judge, read_rows

if TYPE_CHECKING:  # multiprocessing is imported when a scan runs in parallel, not at every start (15 ms)
    import multiprocessing
    from multiprocessing.sharedctypes import Synchronized

BATCH = 1024  # lines per batch handed to the parent
# Files (estimated) from which a scan is worth worker processes: below, forking costs more than it saves.  Each
# worker holds an interpreter and its state (about 25 MB); a tree of 10,000 files takes about 0.2 s in one process.
PARALLEL_FROM = 50_000


class ScanJob:
    def __init__(
        self,
        source: str,
        index: int,
        prefix: bytes,  # the source's key prefix in the state file
        root: bytes,
        db: Path,
        start: bytes,  # the directory walked (relative to the root)
        lo: bytes,  # key range [lo, hi) of this job
        hi: bytes | None,
        filters: Filters,
        follow_symlinks: bool,
        settle_ns: int,  # files changed more recently than this may still be being written
        via: str,
        dir_hook: Callable[[bytes, bytes], object] | None = None,  # e.g. add an inotify watch; returns a note
        # True once a stop was asked for (SIGTERM): the walk raises Stopped at the next
        # directory, or within 4096 files, so a scan of a huge tree never holds a stop back
        stop: Callable[[], bool] | None = None,
    ):
        self.source = source
        self.index = index
        self.prefix = prefix
        self.root = root
        self.db = db
        self.start = start
        self.lo = lo
        self.hi = hi
        self.filters = filters
        self.follow_symlinks = follow_symlinks
        self.settle_ns = settle_ns
        self.via = via
        self.dir_hook = dir_hook
        self.stop = stop


class Batch:
    """What a job found, for the parent to apply in order.

    Batches cross a pipe on large scans, so they are kept in the shapes that
    pickle fastest: parallel lists of bytes, and the new state rows flattened into
    one array of (size, mtime_ns, ino) triples (for a deleted file: what it was).
    """

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.lines: list[bytes] = []  # encoded events, one per key
        self.kinds = bytearray()  # the stored kind per key (watch_state)
        self.rows = array.array("q")
        self.pending: list[tuple[bytes, tuple[int, int, int]]] = []  # recent: let them settle
        self.notes: list[object] = []  # from dir_hook (watches added)
        self.errors: list[tuple[bytes, int, str]] = []  # unreadable directories
        self.scanned = 0

    def add(self, key: bytes, line: bytes, kind: int, size: int, mtime_ns: int, ino: int) -> None:
        self.keys.append(key)
        self.lines.append(line)
        self.kinds.append(kind)
        self.rows.extend((size, mtime_ns, ino))

    def row(self, i: int) -> Row:
        """The new state row of line ``i``: (size, mtime_ns, ino, kind); for a deleted
        file, what it was."""
        r = self.rows
        return r[3 * i], r[3 * i + 1], r[3 * i + 2], self.kinds[i]


def run_job(job: ScanJob, now_ns: Callable[[], int]) -> Iterator[Batch]:
    """Merge the walk of the job's range with the state rows of that range."""
    batch = Batch()

    stop = job.stop

    def on_dir(rel: bytes, path: bytes) -> None:
        if stop is not None and stop():
            raise Stopped
        if job.dir_hook is not None:
            note = job.dir_hook(rel, path)
            if note is not None:
                batch.notes.append(note)

    def on_error(rel: bytes, exc: OSError) -> None:
        batch.errors.append((rel, exc.errno or 0, exc.strerror or str(exc)))

    hooks = WalkHooks(on_dir=on_dir, on_error=on_error)
    tree = walk(job.root, job.start, job.filters, job.follow_symlinks, hooks, job.lo, job.hi)
    rows = read_rows(job.db, job.prefix, job.lo, job.hi)
    encode = FileEventEncoder(job.source, job.root, job.via)
    recent = now_ns() - job.settle_ns
    scanned = 0
    try:
        row = next(rows, None)
        for key, size, mtime_ns, ino, skipped in tree:
            scanned += 1
            while row is not None and row[0] < key:
                _gone(job, row, batch, encode)
                row = next(rows, None)
            if row is not None and row[0] == key:
                same = row[1] == size and row[2] == mtime_ns and row[3] == ino
                old: int | None = row[4]
                row = next(rows, None)
                if same and not skipped and old != SKIPPED and old != SKIPPED_GONE:
                    continue  # the common case: a file as it was
            else:
                same, old = False, None
            kind = judge(old, same, bool(skipped))
            if kind is None:
                continue
            st = (size, mtime_ns, ino)
            if not scanned & 4095:
                recent = now_ns() - job.settle_ns
                if stop is not None and stop():
                    raise Stopped
            if mtime_ns > recent and not skipped:
                batch.pending.append((key, st))
                continue
            line = encode_row(encode, kind, key.replace(b"\0", b"/"), size, mtime_ns, ino)
            batch.add(key, line, kind, size, mtime_ns, ino)
            if len(batch.keys) >= BATCH:
                batch.scanned, scanned = scanned, 0
                yield batch
                batch = Batch()
        gone = 0
        while row is not None:
            _gone(job, row, batch, encode)
            row = next(rows, None)
            gone += 1
            if not gone & 4095 and stop is not None and stop():
                raise Stopped  # a huge tree gone (each row costs an lstat): the next scan goes on
    finally:
        rows.close()
    batch.scanned = scanned
    yield batch


def _gone(job: ScanJob, row: tuple[bytes, int, int, int, int], batch: Batch, encode: FileEventEncoder) -> None:
    """A state row the walk did not see: deleted, unless the file is there after all
    (created again since, or behind a directory the walk could not read)."""
    rel = to_rel(row[0])
    path = job.root.rstrip(b"/") + b"/" + rel
    if not os.path.isdir(job.root):
        # The source root itself is gone (moved away, unmounted, a deploy swapping
        # directories): that is no proof its files were deleted, and reporting them
        # would empty every destination and the synced-files database.  When the root
        # is back, a rescan reports what really changed.
        return
    # Judged as the walk would (links.resolve): a file now below a directory swapped for
    # a symlink is gone from the tree, even though the path still opens.
    now = resolve(job.root, rel, job.follow_symlinks)
    if now == UNKNOWN:
        return  # a directory on the way cannot be searched: absence is not proven
    if now is not None:
        return  # there after all (created again since the walk passed): its own hint or rescan reports it
    parent = os.path.dirname(path)
    if not os.access(parent, os.R_OK | os.X_OK) and os.path.isdir(parent):
        return  # the file may be there, in a directory the walk could not list
    if job.filters.skip_path(rel):
        return  # left out by today's filters: not ours to delete
    batch.add(row[0], encode("deleted", rel, row[1], row[2], row[3]), DELETED, row[1], row[2], row[3])


# -- planning and running in parallel -----------------------------------------------


def plan(job: ScanJob, parts: int) -> list[ScanJob]:
    """Cut a whole-tree job into about ``parts`` jobs of similar size, by key range.

    Cut points are directories of the first two levels, spread evenly in key order.
    Returns [job] when the tree is too small to be worth it.
    """
    if parts <= 1 or job.start:
        return [job]
    cuts = _top_dirs(job.root, job.filters, depth=1)
    if len(cuts) < 4 * parts:
        cuts = _top_dirs(job.root, job.filters, depth=2)
    if len(cuts) < 2 * parts:
        return [job]
    step = len(cuts) / parts
    bounds = sorted({cuts[int(i * step)] for i in range(1, parts)})
    edges = [job.lo, *bounds, job.hi]
    return [_with_range(job, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _with_range(job: ScanJob, lo: bytes, hi: bytes | None) -> ScanJob:
    return ScanJob(**{**job.__dict__, "lo": lo, "hi": hi})


def _top_dirs(root: bytes, filters: Filters, depth: int, most: int = 4096) -> list[bytes]:
    """Keys of directories in the first ``depth`` levels, in key order: at most about
    ``most`` of them, thinned evenly while listing, so memory does not grow with a
    wide tree (they are only cut points)."""
    out: list[bytes] = []
    level: list[tuple[bytes, bytes]] = [(b"", root)]
    for _ in range(depth):
        nxt: list[tuple[bytes, bytes]] = []
        quota = max(1, most // max(1, len(level)))  # per parent directory
        for rel, path in level:
            names = _subdirs(path, rel, filters)
            step = -(-len(names) // quota)  # ceil: keep every step-th name
            for name in names[::step] if step > 1 else names:
                r = rel + b"/" + name if rel else name
                nxt.append((r, path.rstrip(b"/") + b"/" + name))
        out.extend(to_key(r) for r, _ in nxt)
        level = nxt
    out.sort()
    return out


def _subdirs(path: bytes, rel: bytes, filters: Filters) -> list[bytes]:
    try:
        with os.scandir(path) as it:
            names = [
                e.name
                for e in it
                if e.is_dir(follow_symlinks=False)
                and not filters.skip_dir(e.name, rel + b"/" + e.name if rel else e.name)
            ]
    except OSError:
        return []
    names.sort()
    return names


_JOBS: list[ScanJob] = []  # set before the workers fork: jobs hold closures, which do not pickle


def _worker(jobs_taken: Synchronized, out: multiprocessing.Queue, parent: int) -> None:  # type: ignore[type-arg]
    """A scan worker: take the next job, send its batches, until none are left."""
    import time
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    die_with_parent(parent)
    status = 0
    try:
        while True:
            with jobs_taken.get_lock():
                i = jobs_taken.value
                jobs_taken.value += 1
            if i >= len(_JOBS):
                break
            for batch in run_job(_JOBS[i], time.time_ns):
                out.put(batch)  # bounded queue: a slow parent slows the workers, memory stays flat
        out.put(None)
    except BaseException:
        out.put(traceback.format_exc())
        status = 1
    finally:
        out.close()
        out.join_thread()
        os._exit(status)  # never run the parent's atexit handlers or close its SQLite connection


def run_jobs(
    jobs: list[ScanJob], workers: int, between: Callable[[], None] | None, stop: Callable[[], bool] | None = None
) -> Iterator[Batch]:
    """Run the jobs of one scan: in this process while the tree looks small, the rest in ``workers`` forked
    processes once it looks large.  The jobs already run say how large: files walked so far, times all jobs over
    those done (a plan cuts by directories, so jobs are of similar size), from ``PARALLEL_FROM`` files on."""
    import time

    walked = 0
    for i, job in enumerate(jobs):
        if workers > 1 and i and walked * len(jobs) >= PARALLEL_FROM * i and len(jobs) - i > 1:
            yield from run_parallel(jobs[i:], workers, between, stop)
            return
        for batch in run_job(job, time.time_ns):
            walked += batch.scanned
            yield batch


def run_parallel(
    jobs: list[ScanJob], workers: int, between: Callable[[], None] | None, stop: Callable[[], bool] | None = None
) -> Iterator[Batch]:
    """Run jobs in forked worker processes; yield their batches as they come.

    ``between`` is called while waiting (the inotify backend reads its queue there,
    so a long scan cannot overflow it); ``stop`` too: when it says so, Stopped is
    raised and the workers are killed."""
    import multiprocessing
    import queue

    global _JOBS
    _JOBS = jobs
    ctx = multiprocessing.get_context("fork")
    n = min(workers, len(jobs))
    taken = ctx.Value("i", 0)
    out: multiprocessing.Queue = ctx.Queue(maxsize=2 * n)  # type: ignore[type-arg]
    procs = [ctx.Process(target=_worker, args=(taken, out, os.getpid()), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    running = n
    try:
        while running:
            try:
                item = out.get(timeout=0.2)
            except queue.Empty:
                if stop is not None and stop():
                    raise Stopped from None
                if between is not None:
                    between()
                if not any(p.is_alive() for p in procs) and out.empty():
                    raise RuntimeError("scan workers died without finishing (killed?)") from None
                continue
            if item is None:
                running -= 1
            elif isinstance(item, str):
                raise RuntimeError(f"a scan worker failed:\n{item}")
            else:
                yield item
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)
        out.close()
        out.cancel_join_thread()
        _JOBS = []
