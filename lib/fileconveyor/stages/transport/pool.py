"""Connections to one destination, shared by that lane's worker threads.

A lane has as many worker threads as the destination has connections; the runner queues the lane's next items
ahead of them (lanes.AHEAD_PER_WORKER), so a connection that finishes a file starts the next one at once.  (Twice
as many threads, the extra ones waiting here with an item, did that before: measured, the extra threads cost more
in switching than they saved.)  At most ``size`` transporters exist, each reused across files until closed; one
whose connection dropped reconnects by itself on its next operation.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

from ...transporters import Transporter


class Pool:
    def __init__(self, make: Callable[[], Transporter], size: int):
        self.make = make
        # Free transporters, or None for one not made yet.  A SimpleQueue blocks in C: a threading.Semaphore
        # (Python code around a Condition) took a seventh of the interpreter's time with many small files.
        self.free: queue.SimpleQueue[Transporter | None] = queue.SimpleQueue()
        for _ in range(size):
            self.free.put(None)
        self.lock = threading.Lock()
        self.all: list[Transporter] = []

    @contextlib.contextmanager
    def get(self) -> Iterator[Transporter]:
        """A transporter for this thread's use until the block ends."""
        tp = self.free.get()
        try:
            if tp is None:
                tp = self.make()
                with self.lock:
                    self.all.append(tp)
            yield tp
        finally:
            self.free.put(tp)

    def adopt(self, tp: Transporter) -> None:
        """Take ``tp`` (connected by the start-up check) as the first transporter, before any get()."""
        self.free.get()  # one None: a transporter not made yet
        with self.lock:
            self.all.append(tp)
        self.free.put(tp)

    def close(self) -> None:
        with self.lock:
            every, self.all = self.all, []
        for tp in every:
            tp.close()
