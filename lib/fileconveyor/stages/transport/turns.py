"""Worker threads of a local destination take turns on small files.

A copy of a 4 KiB file into a local folder is about fifteen system calls of microseconds each, and Python releases
its interpreter lock (the GIL) around every one.  With four worker threads copying at once, each of those calls
hands the lock to another thread and takes it back after: measured on 10,000 files, 90 futex calls per file
(one worker: under one) and most of fc-transport's CPU time, on two cores more than the copies themselves.  So
the workers of a destination whose transporter says ``takes_turns`` (transporters/local.py) work small items one
at a time: the others wait on one lock, which costs a wake-up per item, not one per system call.  Large files
(TURN_MAX_SIZE and up) and items whose size the event does not give keep running side by side: their copies are
long calls in the kernel, which parallel connections do overlap.

The turn is a matter of speed only: what an item does, and its order with respect to other items of its path
(the runner's keys), is the same with or without it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ...delivery.stage import Item

TURN_MAX_SIZE = 256 * 1024  # bytes: from here on the copy itself outweighs the hand-offs of the lock


class Turns:
    def __init__(self, lanes: Iterable[str]):
        self.locks = {lane: threading.Lock() for lane in lanes}

    def lock_for(self, item: Item) -> threading.Lock | None:
        """The lock ``item``'s worker holds while working it, or None: it runs beside the others."""
        lock = self.locks.get(item.lane)
        if lock is None:
            return None
        ev = item.event
        if ev.get("kind") == "deleted":
            return lock
        size = ev.get("size")
        return lock if type(size) is int and 0 <= size < TURN_MAX_SIZE else None
