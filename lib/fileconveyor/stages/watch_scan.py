"""Comparing a tree with the state, in one process or several.

A scan is cut into jobs by key range (see watchers/tree.py: key order is walk
order).  Each job walks its part of the tree, reads the state rows of the same
range on its own connection, and merges the two: what differs becomes an event
line, encoded by the job.  The parent process only writes the lines and records
the rows, so on a large tree the expensive part (stat, compare, encode) runs on
every core while the output stays one stream.

Jobs never decide alone: the parent drops a line whose path got a live hint
while the job ran (that hint is newer), so a job may run on a snapshot.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..events import FileStat, encode_file_event
from ..watchers.tree import Filters, WalkHooks, to_key, to_rel, walk
from .watch_state import read_rows

BATCH = 4096  # lines per batch handed to the parent


@dataclass
class ScanJob:
    source: str
    index: int
    root: bytes
    db: Path
    start: bytes  # the directory walked (relative to the root)
    lo: bytes  # key range [lo, hi) of this job
    hi: bytes | None
    filters: Filters
    follow_symlinks: bool
    settle_ns: int  # files changed more recently than this may still be being written
    via: str
    dir_hook: Callable[[bytes, bytes], object] | None = None  # e.g. add an inotify watch; returns a note


@dataclass
class Batch:
    """What a job found, for the parent to apply in order."""

    lines: list[tuple[bytes, bytes, FileStat | None, str]] = field(default_factory=list)  # key, line, new row, kind
    pending: list[tuple[bytes, FileStat]] = field(default_factory=list)  # recently changed: let them settle
    notes: list[object] = field(default_factory=list)  # from dir_hook (watches added)
    errors: list[tuple[bytes, int, str]] = field(default_factory=list)  # unreadable directories
    scanned: int = 0


def run_job(job: ScanJob, now_ns: Callable[[], int]) -> Iterator[Batch]:
    """Merge the walk of the job's range with the state rows of that range."""
    batch = Batch()

    def on_dir(rel: bytes, path: bytes) -> None:
        if job.dir_hook is not None:
            note = job.dir_hook(rel, path)
            if note is not None:
                batch.notes.append(note)

    def on_error(rel: bytes, exc: OSError) -> None:
        batch.errors.append((rel, exc.errno or 0, exc.strerror or str(exc)))

    hooks = WalkHooks(on_dir=on_dir, on_error=on_error)
    tree = walk(job.root, job.start, job.filters, job.follow_symlinks, hooks, job.lo, job.hi)
    rows = read_rows(job.db, job.source, job.lo, job.hi)
    name, root, via = job.source, job.root, job.via
    recent = now_ns() - job.settle_ns
    scanned = 0
    try:
        row = next(rows, None)
        for key, size, mtime_ns, ino in tree:
            scanned += 1
            while row is not None and row[0] < key:
                _gone(job, row, batch)
                row = next(rows, None)
            if row is not None and row[0] == key:
                same = row[1] == size and row[2] == mtime_ns and row[3] == ino
                row = next(rows, None)
                if same:
                    continue
                kind = "modified"
            else:
                kind = "created"
            st = FileStat(size, mtime_ns, ino)
            if not scanned & 4095:
                recent = now_ns() - job.settle_ns
            if mtime_ns > recent:
                batch.pending.append((key, st))
                continue
            batch.lines.append((key, encode_file_event(kind, name, root, to_rel(key), st, via), st, kind))
            if len(batch.lines) >= BATCH:
                batch.scanned, scanned = scanned, 0
                yield batch
                batch = Batch()
        while row is not None:
            _gone(job, row, batch)
            row = next(rows, None)
    finally:
        rows.close()
    batch.scanned = scanned
    yield batch


def _gone(job: ScanJob, row: tuple[bytes, int, int, int], batch: Batch) -> None:
    """A state row the walk did not see: deleted, unless the file is there after all
    (created again since, or behind a directory the walk could not read)."""
    rel = to_rel(row[0])
    path = job.root.rstrip(b"/") + b"/" + rel
    try:
        if stat_mod.S_ISREG(os.stat(path).st_mode):
            return
    except (OSError, ValueError):
        pass
    parent = os.path.dirname(path)
    if os.path.isdir(parent) and not os.access(parent, os.R_OK | os.X_OK):
        return  # cannot list it: absence is not proof
    if job.filters.skip_path(rel):
        return  # left out by today's filters: not ours to delete
    old = FileStat(row[1], row[2], row[3])
    batch.lines.append((row[0], encode_file_event("deleted", job.source, job.root, rel, old, job.via), None, "deleted"))


# -- planning and running in parallel -----------------------------------------------


def plan(job: ScanJob, parts: int) -> list[ScanJob]:
    """Cut a whole-tree job into about ``parts`` jobs of similar size, by key range.

    Cut points are directories of the first two levels, spread evenly in key order.
    Returns [job] when the tree is too small to be worth it.
    """
    if parts <= 1 or job.start:
        return [job]
    cuts = _top_dirs(job.root, job.filters, depth=2)
    if len(cuts) < 2 * parts:
        return [job]
    step = len(cuts) / parts
    bounds = sorted({cuts[int(i * step)] for i in range(1, parts)})
    edges = [job.lo, *bounds, job.hi]
    return [_with_range(job, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _with_range(job: ScanJob, lo: bytes, hi: bytes | None) -> ScanJob:
    return ScanJob(**{**job.__dict__, "lo": lo, "hi": hi})


def _top_dirs(root: bytes, filters: Filters, depth: int) -> list[bytes]:
    """Keys of the directories in the first ``depth`` levels, in key order."""
    out: list[bytes] = []
    level: list[tuple[bytes, bytes]] = [(b"", root)]
    for _ in range(depth):
        nxt: list[tuple[bytes, bytes]] = []
        for rel, path in level:
            try:
                with os.scandir(path) as it:
                    for e in it:
                        r = rel + b"/" + e.name if rel else e.name
                        if e.is_dir(follow_symlinks=False) and not filters.skip_dir(e.name, r):
                            nxt.append((r, e.path))
            except OSError:
                continue
        out.extend(to_key(r) for r, _ in nxt)
        level = nxt
    out.sort()
    return out


_JOBS: list[ScanJob] = []  # set before the workers fork: jobs hold closures, which do not pickle


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:  # die with the parent, even when it is killed with -9
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_indexed(i: int) -> list[Batch]:
    import time

    return list(run_job(_JOBS[i], time.time_ns))


def run_parallel(jobs: list[ScanJob], workers: int, between: Callable[[], None] | None) -> Iterator[Batch]:
    """Run jobs in worker processes; yield their batches as jobs complete.

    ``between`` is called while waiting (the inotify backend reads its queue there,
    so a long scan cannot overflow it)."""
    global _JOBS
    _JOBS = jobs
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(min(workers, len(jobs)), initializer=_worker_init)
    try:
        results = pool.imap_unordered(_run_indexed, range(len(jobs)))
        remaining = len(jobs)
        while remaining:
            try:
                batches = results.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                if between is not None:
                    between()
                continue
            remaining -= 1
            yield from batches
            if between is not None:
                between()
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        _JOBS = []
