"""FSEvents (macOS), through macfsevents (``import fsevents``).

FSEvents watches whole trees by path: one stream covers every source, there is no
per-directory watch to add and no watch limit.  It reports *records*: a path and
the flags FSEvents accumulated for it, possibly several operations merged into one
(Created|Modified|Removed).  ``translate`` turns one record into hints, as a pure
function, so it is tested on Linux from recorded records; the core then compares
the disk with the state, which is why a merged record needs no untangling.

macfsevents calls us on its own thread (a CFRunLoop).  That thread only queues the
record and writes to a pipe; everything else happens in the main thread,
in ``process()``, which the select loop of run_live wakes through ``fileno()`` (at most
one byte is waiting at a time, however many records are).
What FSEvents cannot promise is covered by rescans: dropped events (UserDropped,
KernelDropped) rescan every source, MustScanSubDirs rescans that subtree, and a
dead observer thread turns this backend into polling.
"""

from __future__ import annotations

import enum
import os
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from .tree import Filters

if TYPE_CHECKING:
    from types import ModuleType

    from ..report import Reporter
    from ..stages.watch.stage import Core, Source


class EventFlag(enum.IntFlag):
    """kFSEventStreamEventFlag* of <CoreServices/FSEvents.h>: part of Apple's ABI, so
    they are spelled out here and this module imports on any system."""

    MustScanSubDirs = 0x00000001
    UserDropped = 0x00000002
    KernelDropped = 0x00000004
    EventIdsWrapped = 0x00000008
    HistoryDone = 0x00000010
    RootChanged = 0x00000020
    Mount = 0x00000040
    Unmount = 0x00000080
    ItemCreated = 0x00000100
    ItemRemoved = 0x00000200
    ItemInodeMetaMod = 0x00000400
    ItemRenamed = 0x00000800
    ItemModified = 0x00001000
    ItemFinderInfoMod = 0x00002000
    ItemChangeOwner = 0x00004000
    ItemXattrMod = 0x00008000
    ItemIsFile = 0x00010000
    ItemIsDir = 0x00020000
    ItemIsSymlink = 0x00040000
    OwnEvent = 0x00080000
    ItemIsHardlink = 0x00100000
    ItemIsLastHardlink = 0x00200000
    ItemCloned = 0x00400000


class CreateFlag(enum.IntFlag):
    """kFSEventStreamCreateFlag*.  macfsevents 0.8 re-exports only FileEvents and None."""

    UseCFTypes = 0x00000001  # never: macfsevents' C handler reads the paths as C strings
    NoDefer = 0x00000002
    WatchRoot = 0x00000004
    IgnoreSelf = 0x00000008
    FileEvents = 0x00000010


F = EventFlag
_RESCAN_ALL = F.UserDropped | F.KernelDropped | F.EventIdsWrapped
_WHOLE_DIR = F.MustScanSubDirs | F.Mount | F.Unmount
_FILE_TYPE = F.ItemIsFile | F.ItemIsSymlink
_ANY_TYPE = _FILE_TYPE | F.ItemIsDir
_GONE = F.ItemRemoved | F.ItemRenamed
_BUSY = F.ItemCreated | F.ItemModified
_NAMES_CHANGED = F.ItemCreated | F.ItemRemoved | F.ItemRenamed
_ITEM_CHANGE = (
    _NAMES_CHANGED
    | F.ItemInodeMetaMod
    | F.ItemModified
    | F.ItemFinderInfoMod
    | F.ItemChangeOwner
    | F.ItemXattrMod
    | F.ItemCloned
)
# What can change which files a directory holds or whether we may list it.  Xattr and
# FinderInfo changes (Finder tags, folder colours) cannot, so they cost no rescan.
_DIR_CHANGE = _NAMES_CHANGED | F.ItemInodeMetaMod | F.ItemChangeOwner | F.ItemModified

# Item events (FileEvents: one record per file, not per directory), RootChanged for a
# root moved or deleted (WatchRoot), and the first event of a burst at once (NoDefer).
STREAM_FLAGS = CreateFlag.FileEvents | CreateFlag.WatchRoot | CreateFlag.NoDefer
LATENCY = 0.05  # seconds FSEvents gathers events before calling us; the core settles anyway
MAX_QUEUED = 100_000  # records waiting for the main thread; beyond, rescan instead of growing
STOP_TIMEOUT = 2.0  # seconds close() waits for the observer thread
INSTALL_HINT = "the fsevents backend needs macfsevents: pip install macfsevents"

DirtyHint = tuple[Literal["dirty"], bytes, bool | None]
RescanHint = tuple[Literal["rescan"], bytes]
RescanAllHint = tuple[Literal["rescan_all"]]
RootChangedHint = tuple[Literal["root_changed"]]
Hint = DirtyHint | RescanHint | RescanAllHint | RootChangedHint


# -- translation (pure) ----------------------------------------------------------------


def _norm(path: bytes) -> bytes:
    """Without trailing slashes (FSEvents ends directory-level paths with one), "/" kept."""
    return path.rstrip(b"/") or (b"/" if path.startswith(b"/") else path)


def relative_to(root: bytes, path: bytes) -> bytes | None:
    """``path`` relative to ``root`` (b"" for the root itself), None when outside it.

    Inside means equal or followed by "/": /a/site2 is not inside /a/site."""
    root, path = _norm(root), _norm(path)
    if path == root:
        return b""
    prefix = root if root == b"/" else root + b"/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def _is_above(path: bytes, root: bytes) -> bool:
    """True when directory ``path`` strictly contains ``root``."""
    return bool(relative_to(path, root))


def translate(root: bytes, path: bytes, flags: int) -> list[Hint]:
    """The hints one FSEvents record (absolute ``path``, raw ``flags``) gives source ``root``.

    Pure: it never looks at the disk.  The core does, which is why a file record is
    always just "dirty" whatever FSEvents merged into it.
    """
    if flags & _RESCAN_ALL:
        return [("rescan_all",)]  # events were lost; the path may be "/" and means nothing
    if flags & F.HistoryDone:
        return []  # end of replayed history (never sent "since now"); its path means nothing
    if not path.startswith(b"/"):
        return []  # FSEvents paths are absolute; anything else cannot be placed
    rel = relative_to(root, path)
    if rel is None:
        return _above_root(flags) if _is_above(path, root) else []
    if flags & F.RootChanged:
        return [("root_changed",)] if not rel else [("rescan", rel)]
    if flags & _WHOLE_DIR:
        return [("rescan", rel)]
    return _item(rel, flags)


def _above_root(flags: int) -> list[Hint]:
    """A record for a directory above the root: only nested sources see these (the
    stream watches the outer one), and they matter when the root went with it."""
    if flags & F.RootChanged:
        return [("root_changed",)]
    if flags & _WHOLE_DIR or (flags & F.ItemIsDir and flags & _NAMES_CHANGED):
        return [("rescan", b"")]
    return []


def _item(rel: bytes, flags: int) -> list[Hint]:
    hints: list[Hint] = []
    if not flags & _ANY_TYPE:
        # No item type: a directory-level record ("something changed in here", as
        # FSEvents reports without FileEvents), or an item FSEvents did not type.
        if flags & _ITEM_CHANGE and rel:
            hints.append(("dirty", rel, None))
        hints.append(("rescan", rel))
        return hints
    if flags & _FILE_TYPE and rel:
        hints.append(("dirty", rel, _closed(flags)))
    if flags & F.ItemIsDir and flags & _DIR_CHANGE:
        hints.append(("rescan", rel))  # both types when a file became a directory
    return hints


def _closed(flags: int) -> bool | None:
    """FSEvents never reports a close.  A name removed or renamed has no writer left
    at it; once Created or Modified are merged in, someone may still be writing."""
    if flags & _GONE and not flags & _BUSY:
        return True
    return None


# -- the backend -----------------------------------------------------------------------


class FSEventsBackend:
    name = "fsevents"

    def __init__(self, core: Core, reporter: Reporter, interval: float):
        self._fsevents = _import_macfsevents()
        self.core = core
        self.reporter = reporter
        self.interval = max(interval, 0.1)
        self._roots = [(src, _root_aliases(src.root)) for src in core.sources]
        # Filled by the observer thread, emptied by the main thread (deque is thread-safe).
        self._records: deque[tuple[str | bytes, int]] = deque()
        self._overflowed = False
        self._signalled = False  # a wake-up byte is in the pipe (or about to be)
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._observer: Any = None
        self._stream: Any = None
        self._observer_done = False
        self._observer_error: BaseException | None = None
        self._closing = False
        self._polling = False
        self._next_poll = 0.0
        core.via = "fsevents"
        core.scan_via = "scan"
        # No per-directory watch (no dir_hook); between scan batches, hand out the hints
        # queued meanwhile so the queue stays short during a long scan.
        core.between_batches = self._pump

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._roots:
            self._start_observer()  # before the catch-up scan: nothing changed meanwhile is missed
        for src in self.core.sources:
            self.core.scan(src)

    def fileno(self) -> int | None:
        return self._rfd

    def next_due(self) -> float | None:
        return self._next_poll if self._polling else None

    def process(self) -> None:
        self._pump()
        if self._polling and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.interval
            self.core.rescan_all()

    def close(self) -> None:
        self._closing = True
        obs = self._observer
        if obs is not None:
            try:
                obs.unschedule(self._stream)  # a run loop without a stream returns
                obs.stop()
            except Exception:
                pass  # never ran, or already ended
            obs.join(STOP_TIMEOUT)
            if obs.is_alive():
                return  # it may still write to the pipe: leave it open (daemon thread, exits with us)
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1

    def _start_observer(self) -> None:
        fse = self._fsevents
        paths = [os.fsdecode(p) for p in _outermost([aliases[0] for _, aliases in self._roots])]
        try:
            self._stream = fse.Stream(self._on_record, *paths, flags=int(STREAM_FLAGS), latency=LATENCY)
        except UnicodeError as exc:
            raise ConfigError(f"FSEvents cannot watch a path that is not UTF-8 ({exc}); use --backend polling") from exc
        obs = fse.Observer()
        obs.daemon = True  # a stuck CFRunLoop must not keep fc-watch from exiting
        obs.run = _run_then(obs.run, self._observer_ended)
        obs.schedule(self._stream)  # before start(): the thread schedules it on its own run loop
        obs.start()
        self._observer = obs

    # -- the observer thread ---------------------------------------------------------

    def _on_record(self, path: str | bytes, flags: int, *_: object) -> None:
        """Called by macfsevents on its thread, once per record.  Queue it, wake the main
        loop, nothing else: an exception here would stop its run loop for good."""
        try:
            if len(self._records) < MAX_QUEUED:
                self._records.append((path, flags))
            else:
                self._overflowed = True
            self._wake()
        except Exception:
            self._overflowed = True  # a record lost: the rescan it triggers covers it

    def _wake(self) -> None:
        # Append first, then test: process() clears the flag after emptying the pipe and
        # before taking the records, so a record is either taken or followed by a byte.
        if self._signalled:
            return
        self._signalled = True
        try:
            os.write(self._wfd, b"\0")
        except OSError:
            pass  # pipe full: readable anyway

    def _observer_ended(self, error: BaseException | None) -> None:
        self._observer_error = error
        self._observer_done = True
        self._signalled = False
        self._wake()

    # -- the main thread -------------------------------------------------------------

    def _pump(self) -> None:
        """Turn every queued record into hints.  Never blocks."""
        self._drain_pipe()
        self._signalled = False
        if self._overflowed:
            self._overflowed = False
            self._records.clear()
            self.reporter.warn(
                f"more than {MAX_QUEUED} FSEvents records waiting: rescanning every source so no change is lost"
            )
            self.core.rescan_all()
        self._apply(self._take())
        # Here, not in process(): between scan batches this drains the byte a dying
        # observer wrote, and nothing else would wake the main loop for it again.
        self._check_observer()

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except OSError:
            pass  # empty (EAGAIN), or closed

    def _take(self) -> list[tuple[str | bytes, int]]:
        records, pop = [], self._records.popleft
        try:
            while True:
                records.append(pop())
        except IndexError:
            return records

    def _apply(self, records: list[tuple[str | bytes, int]]) -> None:
        now = time.monotonic()
        lost = False
        for raw, flags in records:
            path = raw if isinstance(raw, bytes) else os.fsencode(raw)
            for src, aliases in self._roots:
                for hint in _translate_any(aliases, path, flags):
                    lost |= self._hint(src, hint, now)
        if lost:
            self.reporter.warn("FSEvents dropped events: rescanning every source so no change is lost")
            self.core.rescan_all()

    def _hint(self, src: Source, hint: Hint, now: float) -> bool:
        """Apply one hint; True for rescan_all, which the caller does once per batch."""
        if hint[0] == "dirty":
            self.core.dirty(src, hint[1], hint[2], now)
        elif hint[0] == "rescan":
            if not _dir_excluded(self.core.filters, hint[1]):
                self.core.rescan(src, hint[1])
        elif hint[0] == "root_changed":
            self.reporter.warn(
                f"source {src.name!r}: {os.fsdecode(src.root)} or a directory above it was moved, "
                "deleted or created; comparing it again"
            )
            self.core.rescan(src, b"")
        return hint[0] == "rescan_all"

    def _check_observer(self) -> None:
        if not self._observer_done or self._polling or self._closing:
            return
        why = f" ({self._observer_error!r})" if self._observer_error else ""
        self.reporter.warn(
            f"FSEvents stopped delivering events{why}; polling every source every {self.interval:g}s instead"
        )
        self._polling = True
        self._next_poll = time.monotonic() + self.interval
        self.core.rescan_all()


# -- helpers ---------------------------------------------------------------------------


def _import_macfsevents() -> ModuleType:
    """macfsevents, imported only when this backend is chosen: it exists on macOS only."""
    try:
        import fsevents
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    if not hasattr(fsevents, "FS_CFLAGFILEEVENTS"):  # before 0.5, Stream took no create flags
        raise ConfigError("the fsevents backend needs macfsevents 0.8 or later: pip install -U macfsevents")
    return fsevents


def _run_then(run: Callable[[], None], ended: Callable[[BaseException | None], None]) -> Callable[[], None]:
    """Wrap Observer.run so the main loop hears when the thread ends, and why."""

    def wrapped() -> None:
        error: BaseException | None = None
        try:
            run()
        except BaseException as exc:  # reported by the main thread, not as a thread traceback
            error = exc
        finally:
            ended(error)

    return wrapped


def _root_aliases(root: bytes) -> tuple[bytes, ...]:
    """Spellings of ``root`` FSEvents may use, the watched one first.  FSEvents reports
    real paths (/tmp/x arrives as /private/tmp/x) and, on HFS+, names in NFD."""
    real = os.path.realpath(root)
    found = [real, root]
    try:
        text = real.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        found += [unicodedata.normalize(form, text).encode("utf-8") for form in ("NFD", "NFC")]
    return tuple(dict.fromkeys(_norm(p) for p in found))


def _translate_any(aliases: tuple[bytes, ...], path: bytes, flags: int) -> list[Hint]:
    for root in aliases:
        hints = translate(root, path, flags)
        if hints:
            return hints
    return []


def _outermost(roots: list[bytes]) -> list[bytes]:
    """The roots not inside another: FSEvents watches trees, nested ones come for free."""
    kept: list[bytes] = []
    for root in sorted(set(roots)):  # a directory sorts before everything below it
        if not any(relative_to(k, root) is not None for k in kept):
            kept.append(root)
    return kept


def _dir_excluded(filters: Filters, rel: bytes) -> bool:
    """True when directory ``rel`` or one above it is left out (FSEvents reports them anyway)."""
    if not rel or filters.empty:
        return False
    parts = rel.split(b"/")
    return any(filters.skip_dir(name, b"/".join(parts[: i + 1])) for i, name in enumerate(parts))
