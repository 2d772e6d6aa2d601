"""Polling: compare every source with the state every --interval seconds.

Works everywhere (NFS, FUSE, containers without inotify).  A file seen changing
becomes pending and is emitted once its size and mtime hold still for --settle.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..report import Reporter
    from ..stages.watch.stage import Core


class PollingBackend:
    name = "polling"

    def __init__(self, core: Core, reporter: Reporter, interval: float):
        self.core = core
        self.reporter = reporter
        self.interval = max(interval, 0.05)
        self._next = 0.0
        core.via = core.scan_via = "polling"

    def start(self) -> None:
        for src in self.core.sources:
            self.core.scan(src)
        self._next = time.monotonic() + self.interval

    def fileno(self) -> int | None:
        return None

    def next_due(self) -> float | None:
        return self._next

    def process(self) -> None:
        if time.monotonic() >= self._next:
            self.core.rescan_all()
            self._next = time.monotonic() + self.interval

    def close(self) -> None:
        pass
