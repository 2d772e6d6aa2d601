"""The interface every discovery backend implements, and the choice among them.

A backend turns what the operating system reports into hints for the core
(stages/watch/stage.py): ``core.dirty(source, rel, closed)`` for a file that may have
changed, ``core.rescan(source, rel_dir)`` for a directory to compare again.  It
never decides what changed: the core does, against the state file.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

from ..errors import UsageError

if TYPE_CHECKING:
    from ..report import Reporter
    from ..stages.watch.stage import Core


class Backend(Protocol):
    name: str

    def start(self) -> None:
        """Compare every source with the state (catch-up), watching as the scan goes.

        A live backend sets ``core.dir_hook`` so that each directory is watched
        before it is listed, and ``core.apply_note`` to record the watches."""

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when process() has work, if any."""

    def next_due(self) -> float | None:
        """Monotonic time at which process() wants to run even without input."""

    def process(self) -> None:
        """Read what the OS reported and hand the core its hints."""

    def close(self) -> None: ...


BACKENDS = ("inotify", "fsevents", "polling")


def auto_backend() -> str:
    if sys.platform.startswith("linux"):  # sys.platform, not the platform module: a few ms of every start-up
        return "inotify"
    if sys.platform == "darwin":
        try:
            import fsevents  # noqa: F401  (macfsevents)

            return "fsevents"
        except ImportError:
            return "polling"
    return "polling"


def make_backend(name: str, core: Core, reporter: Reporter, interval: float) -> Backend:
    """Build backend ``name`` ("auto" picks the best one for this system)."""
    if name == "auto":
        name = auto_backend()
    if name == "inotify":
        from .inotify import InotifyBackend

        return InotifyBackend(core, reporter, interval)
    if name == "polling":
        from .polling import PollingBackend

        return PollingBackend(core, reporter, interval)
    if name == "fsevents":
        from .fsevents import FSEventsBackend

        return FSEventsBackend(core, reporter, interval)
    raise UsageError(f"unknown backend {name!r} (choose from auto, {', '.join(BACKENDS)})")
