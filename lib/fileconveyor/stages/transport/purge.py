"""CDN invalidations (cf://): paths to purge, kept in the state file until CloudFront has them.

After an upload or a deletion on a destination with a CDN in front, the transporter names the paths to purge
(``Transporter.invalidation_paths``).  The stage writes them to its ``invalidations`` table in the transaction
that records the event's outcome, so a kill -9 at any point loses none: a restart loads the table and sends
what is there.  A thread here sends them in batches, one request per ``invalidation_batch`` paths (1,000 on
CloudFront), when a batch is full or its oldest path has waited ``invalidate_after`` seconds: 1,000 changed
files cost one request, not 1,000.  Sent rows are removed by the stage in its next transaction; a crash before
that sends them again, which purges nothing more than once too often.

A failed request (CloudFront down, throttled, credentials refused) keeps the paths and tries again with
exponential back-off; what is still waiting when fc-transport ends stays in the table for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ... import backoff
from ...delivery.timed import TimedWork
from ...transporters import Transporter

RETRY_START = 2.0
RETRY_MAX = 300.0


class _Server:
    """What waits for one destination."""

    def __init__(self, after: float = 0.0, batch: int = 1000):
        self.paths: dict[str, list[int]] = {}  # path -> its rows, in the order they came
        self.since = 0.0  # monotonic time the oldest waiting path came
        self.retry_at = 0.0  # monotonic: no request before this (after a failure)
        self.tries = 0
        self.after = after  # the transporter's invalidate_after
        self.batch = batch  # and its invalidation_batch


class Purger(TimedWork[None]):
    """Sends waiting invalidations in batches on a thread of its own, over its own transporter per destination.
    (TimedWork gives the thread, its condition and its stopping; the schedule here is per batch, not per item.)"""

    thread_name = "invalidations"

    def __init__(self, make: Callable[[str], Transporter], warn: Callable[[str], None], info: Callable[[str], None]):
        super().__init__()
        self.make, self.warn, self.info = make, warn, info
        self.servers: dict[str, _Server] = {}
        self.transporters: dict[str, Transporter] = {}
        self.sent_rows: list[int] = []  # rows sent, for the stage to delete
        self.in_flight = 0
        self.flushing = False  # everything is due now (the end of the run)
        self.requests = 0  # invalidation requests sent
        self.paths_sent = 0

    def add(self, server: str, row: int, path: str) -> None:
        with self.cond:
            s = self.servers.get(server)
            if s is None:
                s = self.servers[server] = self._server(server)
            if not s.paths:
                s.since = time.monotonic()
            s.paths.setdefault(path, []).append(row)
            self.cond.notify_all()

    def pending(self) -> int:
        with self.cond:
            return sum(len(s.paths) for s in self.servers.values()) + self.in_flight

    def due_before(self, deadline: float) -> int:
        """Paths that can be sent before ``deadline`` (wall clock): all, once hurried, but those of a destination
        whose last request failed and that waits to try again later than that."""
        with self.cond:
            by = time.monotonic() + (deadline - time.time())
            return sum(len(s.paths) for s in self.servers.values() if s.retry_at <= by) + self.in_flight

    def hurry(self) -> None:
        """The input ended: send what waits now instead of waiting for a fuller batch."""
        with self.cond:
            self.flushing = True
            self.cond.notify_all()

    def take_sent(self) -> list[int]:
        with self.cond:
            rows, self.sent_rows = self.sent_rows, []
        return rows

    def give_back(self, rows: list[int]) -> None:
        """Rows taken (take_sent) by a transaction that was rolled back: still to remove."""
        with self.cond:
            self.sent_rows[:0] = rows

    def flush(self, timeout: float, stop: Callable[[], bool]) -> None:
        """Send everything that waits now; return once sent, or after ``timeout``, or when a send failed."""
        deadline = time.monotonic() + timeout
        with self.cond:
            self.flushing = True
            self.cond.notify_all()
            while not stop() and time.monotonic() < deadline:
                now = time.monotonic()
                left = [s for s in self.servers.values() if s.paths and s.retry_at <= now]
                if not left and not self.in_flight:
                    return
                self.cond.wait(0.2)

    def close(self) -> None:
        super().close()
        for tp in self.transporters.values():
            tp.close()

    # -- the thread ------------------------------------------------------------------------

    def _server(self, server: str) -> _Server:
        tp = self._transporter(server)
        return _Server(after=tp.invalidate_after, batch=max(1, tp.invalidation_batch))

    def _transporter(self, server: str) -> Transporter:
        tp = self.transporters.get(server)
        if tp is None:
            tp = self.transporters[server] = self.make(server)
        return tp

    def _due(self, now: float) -> tuple[str, list[str], list[int]] | None:
        """The next batch to send (taken out of ``servers``), or None.  Called with the lock held."""
        for name, s in self.servers.items():
            if not s.paths or s.retry_at > now:
                continue
            if self.flushing or len(s.paths) >= s.batch or now - s.since >= s.after:
                paths = list(s.paths)[: s.batch]
                rows = [r for p in paths for r in s.paths.pop(p)]
                s.since = now
                return name, paths, rows
        return None

    def _wait_time(self, now: float) -> float:
        waits = [5.0]
        for s in self.servers.values():
            if s.paths:
                waits.append(max(s.retry_at, s.since + s.after) - now)
        return max(0.01, min(waits))

    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    if self.stopping:
                        return
                    now = time.monotonic()
                    job = self._due(now)
                    if job is not None:
                        break
                    self.cond.wait(self._wait_time(now))
                self.in_flight += len(job[1])
            server, paths, rows = job
            error: Exception | None = None
            delay = 0.0
            try:
                self._transporter(server).invalidate(paths)
            except Exception as exc:  # every kind: the paths stay, and are tried again later
                error = exc
            with self.cond:
                self.in_flight -= len(paths)
                s = self.servers[server]
                if error is None:
                    self.sent_rows.extend(rows)
                    self.requests += 1
                    self.paths_sent += len(paths)
                    s.tries = 0
                else:
                    # back in front of the queue, in their order, with the rows that came meanwhile
                    s.paths = {p: rows_of for p, rows_of in _merge(paths, rows, s.paths)}
                    s.tries += 1
                    delay = backoff.delay(s.tries - 1, RETRY_START, RETRY_MAX)
                    s.retry_at = time.monotonic() + delay
                self.cond.notify_all()
            if error is None:
                self.info(f"{server}: invalidated {len(paths)} path(s) in one request")
            else:
                self.warn(f"{server}: invalidating {len(paths)} path(s) failed: {error}; next try in {delay:.0f} s")


def _merge(paths: list[str], rows: list[int], later: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    """``paths`` (whose rows are ``rows``, in order, one or more per path) put back before ``later``."""
    out: dict[str, list[int]] = {p: [] for p in paths}
    # rows were taken path by path: hand them back the same way (their count per path is not kept, so put
    # them all on the first path; only their ids matter, to delete them once sent)
    if paths:
        out[paths[0]] = list(rows)
    for p, r in later.items():
        out.setdefault(p, []).extend(r)
    return list(out.items())
