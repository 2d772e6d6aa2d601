"""inotify (Linux), through inotify-simple.

One watch per directory, added *before* the directory is listed, so a file
created meanwhile is either listed or reported (a parallel scan's workers add
watches on our descriptor and name their directories in their next batch: an
event that comes first waits for that note).  What inotify cannot promise is
covered by rescans against the state: a queue overflow rescans every source; a
directory created, moved in, moved out or deleted rescans that subtree; a
directory that cannot be watched because fs.inotify.max_user_watches is reached
is polled instead.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from inotify_simple import Event, INotify
from inotify_simple import flags as F

from .tree import subtree_range

if TYPE_CHECKING:
    from ..report import Reporter
    from ..stages.watch.stage import Core, Source

MASK = (
    F.CREATE
    | F.MODIFY
    | F.ATTRIB
    | F.CLOSE_WRITE
    | F.MOVED_FROM
    | F.MOVED_TO
    | F.DELETE
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.ONLYDIR
    | F.EXCL_UNLINK
)
MAX_WATCHES_FILE = "/proc/sys/fs/inotify/max_user_watches"
USERNS_WATCHES_FILE = "/proc/sys/user/max_inotify_watches"
# Events kept during a scan for watches whose notes have not come yet; beyond this, a rescan instead
MAX_EARLY_EVENTS = 100_000


class InotifyBackend:
    name = "inotify"

    def __init__(self, core: Core, reporter: Reporter, interval: float):
        self.core = core
        self.reporter = reporter
        self.interval = max(interval, 0.1)
        self.ino = INotify(nonblocking=True)
        self.mask = MASK if core.opt.follow_symlinks else MASK | F.DONT_FOLLOW
        # wd -> [(source index, directory relative to the root)]: usually one entry;
        # more when sources nest or a followed symlink shows one directory twice.
        self.watches: dict[int, list[tuple[int, bytes]]] = {}
        self.polled: dict[tuple[int, bytes], None] = {}  # subtrees polled: watch limit reached
        # Events of watches added by a scan's worker processes (they share our inotify descriptor) that we
        # read before the batch carrying the watch's note: handled once the note is applied (_apply_note).
        # Dropped, they lost whatever happened in that directory between the listing and the note: a file
        # created or changed just after fc-watch started was never reported (the chaos test's lost file).
        self._early: dict[int, list[Event]] = {}
        self._early_count = 0
        self.lost_roots: set[int] = set()  # sources whose root went away
        self._next_poll = time.monotonic() + self.interval
        core.via = "inotify"
        core.scan_via = "scan"
        core.dir_hook = self._dir_hook
        core.apply_note = self._apply_note
        core.between_batches = self._read

    # -- watches ---------------------------------------------------------------------

    def _dir_hook(self, src: Source) -> Callable[[bytes, bytes], object]:
        """Runs for every directory a scan enters, before it is listed (also in scan
        worker processes, which share this inotify instance): add the watch and
        return a note for _apply_note, run in this process."""
        index, add, mask = src.index, self.ino.add_watch, self.mask

        def hook(rel: bytes, path: bytes) -> object:
            if self.polled and self._is_polled(index, rel):
                return None
            try:
                return ("watch", rel, add(path, mask))
            except OSError as exc:
                # ENOSPC: the watch limit; ENOENT/ENOTDIR: gone already; EACCES: the walk reports it.
                return ("limit", rel) if exc.errno == errno.ENOSPC else None

        return hook

    def _apply_note(self, src: Source, note: object) -> None:
        if not isinstance(note, tuple):
            return
        if note[0] == "limit":
            self._limit_reached(src, note[1])
            return
        _, rel, wd = note
        targets = self.watches.setdefault(wd, [])
        # One directory may have several names (nested sources, a followed symlink):
        # its events are reported under each.  A moved directory's old name was
        # dropped when it moved (MOVED_FROM), so nothing stale stays here.
        if (src.index, rel) not in targets:
            targets.append((src.index, rel))
        early = self._early.pop(wd, None)
        if early:
            self._early_count -= len(early)
            self._handle(early)

    def _limit_reached(self, src: Source, rel: bytes) -> None:
        limit = _read_int(MAX_WATCHES_FILE)
        userns = _read_int(USERNS_WATCHES_FILE)  # the limit of this user namespace (Linux 5.11+)
        where = f"fs.inotify.max_user_watches = {limit if limit is not None else 'unknown'}"
        if userns is not None and userns != limit:
            where += f"; this user namespace allows {userns} (user.max_inotify_watches)"
        self.reporter.warn_once(
            "inotify-limit",
            f"inotify watch limit reached ({where}); polling the directories that could not be "
            f"watched every {self.interval:g}s. Raise the limit with: "
            "sudo sysctl fs.inotify.max_user_watches=1048576",
        )
        self.polled[(src.index, rel)] = None

    def _is_polled(self, index: int, rel: bytes) -> bool:
        anc = rel
        while True:
            if (index, anc) in self.polled:
                return True
            if not anc:
                return False
            anc = anc.rpartition(b"/")[0]

    def _forget(self, index: int, rel_dir: bytes, remove: bool) -> None:
        """Drop the watches of directory ``rel_dir`` and below (``remove``: in the kernel too)."""
        prefix = rel_dir + b"/"
        for wd, targets in list(self.watches.items()):
            keep = [
                (si, r)
                for si, r in targets
                if not (si == index and (r == rel_dir or r.startswith(prefix) or not rel_dir))
            ]
            if len(keep) == len(targets):
                continue
            if keep:
                self.watches[wd] = keep
                continue
            del self.watches[wd]
            if remove:
                try:
                    self.ino.rm_watch(wd)
                except OSError:
                    pass  # already gone with its directory

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for src in self.core.sources:
            self.core.scan(src)

    def fileno(self) -> int | None:
        return self.ino.fileno()

    def next_due(self) -> float | None:
        return self._next_poll if (self.polled or self.lost_roots) else None

    def process(self) -> None:
        self._read()
        if (self.polled or self.lost_roots) and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.interval
            for index, rel in list(self.polled):
                self.core.rescan(self.core.sources[index], rel)
            for index in list(self.lost_roots):
                src = self.core.sources[index]
                if os.path.isdir(src.root):
                    self.reporter.warn(f"source {src.name!r}: {os.fsdecode(src.root)} is back; watching it again")
                    self.lost_roots.discard(index)
                    self.core.rescan(src, b"")

    def close(self) -> None:
        self.ino.close()

    # -- events ----------------------------------------------------------------------

    def _read(self) -> None:
        """Turn every event inotify has queued into hints.  Never blocks."""
        if self._early and not self.core.scanning:
            # the scan is over and every note applied: these watches are not ours (one we removed)
            self._early.clear()
            self._early_count = 0
        self._handle(self.ino.read(timeout=0))

    def _handle(self, events: list[Event]) -> None:
        core, sources, watches = self.core, self.core.sources, self.watches
        skip_dir = core.filters.skip_dir
        follow = core.opt.follow_symlinks
        now = time.monotonic()
        for ev in events:
            mask = ev.mask
            if mask & F.Q_OVERFLOW:
                self._overflowed()
                continue
            targets = watches.get(ev.wd)
            if not targets:
                if core.scanning:  # a watch a scan worker added, its note still on the way: keep it until then
                    self._early.setdefault(ev.wd, []).append(ev)
                    self._early_count += 1
                    if self._early_count > MAX_EARLY_EVENTS:
                        self._overflowed()
                continue
            if mask & F.IGNORED:
                del watches[ev.wd]
                continue
            name = os.fsencode(ev.name)
            for index, rel_dir in targets:
                src = sources[index]
                if mask & (F.DELETE_SELF | F.MOVE_SELF):
                    if not rel_dir:
                        self._root_gone(src)
                    continue  # a subdirectory: its parent reports it as DELETE/MOVED_FROM
                rel = rel_dir + b"/" + name if rel_dir else name
                if mask & F.ISDIR:
                    # A directory appearing or going away changes which files exist; a
                    # chmod or touch of it does not, unless a scan could not read it before.
                    if mask & F.ATTRIB and (index, rel) in core.unreadable:
                        core.unreadable.discard((index, rel))
                        core.rescan(src, rel)
                        continue
                    if not mask & (F.CREATE | F.MOVED_TO | F.DELETE | F.MOVED_FROM) or skip_dir(name, rel):
                        continue
                    if mask & F.MOVED_FROM:
                        # Its watches follow the inodes to wherever it went: drop them.  (A
                        # deleted directory needs nothing: each of its watches ends with
                        # IN_IGNORED, handled above, one at a time.)
                        self._forget(index, rel, remove=True)
                    core.rescan(src, rel)
                    continue
                came_or_went = mask & (F.CREATE | F.MOVED_TO | F.DELETE | F.MOVED_FROM)
                if follow and came_or_went and not skip_dir(name, rel) and self._dir_link(src, rel, mask):
                    # A symlink to a directory made, re-pointed or removed: inotify says "a file", but
                    # with --follow-symlinks a whole subtree came or went under that name.
                    self._forget(index, rel, remove=True)
                    core.rescan(src, rel)
                if mask & F.CREATE:
                    closed = _created_complete(src.root, rel)
                elif mask & F.MODIFY:
                    closed = False
                elif mask & (F.CLOSE_WRITE | F.MOVED_TO | F.DELETE | F.MOVED_FROM):
                    closed = True
                else:  # ATTRIB: touch, chmod; nobody told us whether a writer is busy
                    closed = None
                core.dirty(src, rel, closed, now)

    def _overflowed(self) -> None:
        """Events were lost (the kernel's queue, or too many kept for notes): compare every source again."""
        self.reporter.warn("inotify queue overflowed: rescanning every source so no change is lost")
        self._early.clear()
        self._early_count = 0
        self.core.distrust_pending()
        self.core.rescan_all()

    def _dir_link(self, src: Source, rel: bytes, mask: int) -> bool:
        """A name that appeared as a symlink to a directory, or went away with files below
        it in the state (it was one, followed)."""
        if mask & (F.CREATE | F.MOVED_TO):
            path = src.root.rstrip(b"/") + b"/" + rel
            return os.path.islink(path) and os.path.isdir(path)
        return self.core.state.any_below(src.prefix, *subtree_range(rel))

    def _root_gone(self, src: Source) -> None:
        self.reporter.warn(f"source {src.name!r}: {os.fsdecode(src.root)} was moved or deleted")
        self._forget(src.index, b"", remove=True)
        self.lost_roots.add(src.index)
        self.core.rescan(src, b"")


def _created_complete(root: bytes, rel: bytes) -> bool:
    """A new name that no writer holds open: a symlink or a hard link."""
    try:
        st = os.lstat(root.rstrip(b"/") + b"/" + rel)
    except OSError:
        return True  # already gone: nothing to wait for
    return stat_mod.S_ISLNK(st.st_mode) or st.st_nlink > 1


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
