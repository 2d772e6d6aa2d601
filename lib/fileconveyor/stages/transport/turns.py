"""Small files to a local folder: copied by the main thread at once, or by one worker thread at a time.

A copy of a 4 KiB file into a local folder is about fifteen system calls of microseconds each, and Python releases
its interpreter lock (the GIL) around every one.  Two ways that cost more than the copy:

- Worker threads copying at once hand the lock to each other at every call and take it back after: with four,
  90 futex calls per file (one worker: under one), most of fc-transport's CPU time on an idle machine.  So the
  workers of a destination whose transporter says ``takes_turns`` (transporters/local.py) work small items one
  at a time (``lock_for``): the others wait on one lock, a wake-up per item, not one per system call.
- The hand-off itself: the runner's main thread queues the item, a worker takes it, posts its outcome, the main
  thread gathers it, and the item has an inbox row written and deleted in between.  So a small item whose path
  has nothing pending is copied by the main thread when it takes the line (``Stage.quick``), like fc-filter's
  work: its outcome goes to the outbox in the commit that takes the line.  A kill before that commit leaves the
  line unacknowledged, and its writer sends it again; the runner committed how far the round's lines went
  before the copies (``Stage.quick_works``, Intake.begin_work), so it comes back ``recovered`` and the copy
  looks at the destination first (``look_first``): the same bytes there are not written again, as for a
  worker's item found in the inbox.  The main thread has a transporter of its own, so that workers busy with
  large files never hold it up.  Anything but a finished outcome (a full disk, say) is left to a worker, which
  retries it the usual way, and the main thread leaves that destination to its workers until one of them gets a
  file through.

Large files (TURN_MAX_SIZE and up) and items whose size the event does not give go to the workers, side by
side: their copies are long calls in the kernel, which parallel connections do overlap.  None of this changes
what an item does or its order among the items of its path (the runner's keys).

Overlapping the small copies with the main thread's Python was tried and measured, and did not pay on 2 cores
(docs/benchmarks.md, "small copies beside the main thread"): a copy thread wins the interpreter lock back after each
of its ten system calls only when the busy main thread lets go of it (no overlap at switch intervals of 5, 0.2
or 0.05 ms); a copier process fed per batch overlaps, but costs more CPU per file than the main thread saves, and
the pipeline's stages already keep both cores busy.  What pays is a lean copier given the open descriptors, every
check left in the main thread (stages/transport/copier.py, transporters/copier.py): it costs no more CPU than it
saves and took 13% off the 3-stage pipeline's time on a quiet machine (docs/benchmarks.md, "a lean copier fed open
descriptors").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ...delivery.stage import Item

TURN_MAX_SIZE = 256 * 1024  # bytes: from here on the copy itself outweighs the hand-offs


class Turns:
    def __init__(self, lanes: Iterable[tuple[str, int]]):
        """``lanes``: (name, worker threads) of the destinations whose transporter takes turns."""
        lanes = list(lanes)
        self.lanes = {name for name, _ in lanes}
        self.locks = {name: threading.Lock() for name, n in lanes if n > 1}
        # lanes whose last attempt in the main thread did not finish: left to the workers until one succeeds
        self.off: set[str] = set()

    def small(self, item: Item) -> bool:
        if item.lane not in self.lanes:
            return False
        ev = item.event
        if ev.get("kind") == "deleted":
            return True
        size = ev.get("size")
        return type(size) is int and 0 <= size < TURN_MAX_SIZE

    def lock_for(self, item: Item) -> threading.Lock | None:
        """The lock ``item``'s worker holds while working it, or None: it runs beside the others."""
        lock = self.locks.get(item.lane)
        return lock if lock is not None and self.small(item) else None

    def in_main(self, item: Item) -> bool:
        """Whether the main thread works ``item`` itself (Stage.quick)."""
        return item.lane not in self.off and self.small(item)
