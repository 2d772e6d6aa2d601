"""Connections to one destination, shared by that lane's worker threads.

A lane has ``PREFETCH`` times as many worker threads as the destination has connections: the extra threads hold
the next items, waiting here for a connection, so a connection that finishes a file starts the next one at once
instead of waiting for the stage's main thread to hand out work (for many small files that wait, not the
transfer, was the limit).  At most ``size`` transporters exist, each reused across files until closed; one
whose connection dropped reconnects by itself on its next operation.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from ..transporters import Transporter

PREFETCH = 2


class Pool:
    def __init__(self, make: Callable[[], Transporter], size: int):
        self.make = make
        self.slots = threading.BoundedSemaphore(size)
        self.lock = threading.Lock()
        self.idle: list[Transporter] = []
        self.all: list[Transporter] = []

    @contextlib.contextmanager
    def get(self) -> Iterator[Transporter]:
        """A transporter for this thread's use until the block ends."""
        with self.slots:
            with self.lock:
                tp = self.idle.pop() if self.idle else None
            if tp is None:
                tp = self.make()
                with self.lock:
                    self.all.append(tp)
            try:
                yield tp
            finally:
                with self.lock:
                    self.idle.append(tp)  # last in, first out: the warmest connection is used next

    def close(self) -> None:
        with self.lock:
            every, self.all, self.idle = self.all, [], []
        for tp in every:
            tp.close()
