"""Scheduling: per-lane workers, per-key order.

Items with the same lane and key (a destination and a path, say) run one at a time, in order; everything else
runs concurrently, up to each lane's number of worker threads (``Workers``).  A lane-wide retry (a server down)
pauses the whole lane with exponential back-off and jitter, then probes with one item, so a down server causes
no retry storm and never holds up other lanes.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .. import backoff
from ..report import Reporter
from .stage import Item, Outcome, Retry

LANE_BACKOFF_START = 1.0
LANE_BACKOFF_MAX = 300.0
# Items a lane hands out beyond its workers, per worker, and at least AHEAD_MIN: they wait in the lane's queue,
# so a worker that finishes takes the next at once instead of waiting for the main thread's next round (its
# commit, for many small files, took longer than a transfer: workers sat idle half the time).  AHEAD_MIN is two
# of the runner's big rounds (runner.ROUND_ITEMS): workers go on while one round gathers and commits.  Per-path
# order is unaffected: only the head of each path's queue is ever handed out.
AHEAD_PER_WORKER = 4
AHEAD_MIN = 512
# Items of a lane with workers from which reading waits (Scheduler.enough): two rounds of work, while each
# item in memory costs about 4 KB (fc-transport read 10,000 events at once: 75 MB, 29 MB without them).  A
# paused lane's items and those waiting for their retry time do not count, so a dead server or a file to be
# tried later never stops the other lanes' reading (Options.max_queue still caps them all).
READ_AHEAD = AHEAD_MIN


class Lane:
    def __init__(self, name: str, workers: int):
        self.name = name
        self.workers = workers
        self.running = 0  # handed out: being worked on, or in ``tasks`` for the next free worker
        self.count = 0  # items of this lane in memory: running, ready, waiting, or behind another of their key
        self.ahead = max(workers * AHEAD_PER_WORKER, AHEAD_MIN)
        self.ready: list[tuple[int, Item]] = []  # heads of their key queues, due now
        self.waiting: list[tuple[float, int, Item]] = []  # heads not due yet
        self.paused_until = 0.0
        # set by a worker whose item found the lane in trouble, until the main thread pauses the lane: the
        # other workers put their queued items back meanwhile instead of knocking too
        self.trouble = False
        self.pauses = 0  # in a row, since an item last went through: each one twice as long
        self.probing = False
        self.tasks: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def capacity(self, now: float) -> int:
        if now < self.paused_until:
            return 0
        # inline lanes (no workers) take all that is due in one round
        limit = 1 if self.probing else (self.workers + self.ahead if self.workers else 1 << 30)
        return limit - self.running


class Scheduler:
    """Items in memory, in order; hands out those whose key is free and time is due."""

    def __init__(self, lanes: dict[str, int]):
        self.lanes = {name: Lane(name, n) for name, n in lanes.items()}
        self.keys: dict[tuple[str, bytes], deque[Item]] = {}
        self.count = 0
        self.retrying = 0

    def add(self, item: Item) -> None:
        q = self.keys.get((item.lane, item.key))
        self.count += 1
        self.lanes[item.lane].count += 1
        if q is None:
            self.keys[(item.lane, item.key)] = deque([item])
            self._push(item)
        else:
            q.append(item)

    def _push(self, item: Item) -> None:
        lane = self.lanes[item.lane]
        if item.not_before > time.time():
            heapq.heappush(lane.waiting, (item.not_before, item.order, item))
        else:
            heapq.heappush(lane.ready, (item.order, item))

    def add_running(self, item: Item) -> None:
        """An item already being worked on (inline) that must now hold its key."""
        self.keys[(item.lane, item.key)] = deque([item])
        self.count += 1
        self.lanes[item.lane].count += 1
        self.lanes[item.lane].running += 1

    def head(self, item: Item) -> bool:
        q = self.keys.get((item.lane, item.key))
        return bool(q) and q[0] is item

    def blocked(self, lane: str, key: bytes) -> bool:
        return (lane, key) in self.keys

    def due(self, now: float) -> Iterable[Item]:
        """Items to start now, taking lane capacity."""
        mono = time.monotonic()
        for lane in self.lanes.values():
            while lane.waiting and lane.waiting[0][0] <= now:
                _, order, item = heapq.heappop(lane.waiting)
                heapq.heappush(lane.ready, (order, item))
            cap = lane.capacity(mono)
            while cap > 0 and lane.ready:
                _, item = heapq.heappop(lane.ready)
                lane.running += 1
                cap -= 1
                yield item

    def put_back(self, item: Item) -> None:
        """A handed-out item a worker did not start (its lane paused meanwhile): ready again, as it was."""
        self.lanes[item.lane].running -= 1
        self._push(item)

    def finished(self, item: Item) -> None:
        self.count -= 1
        lane = self.lanes[item.lane]
        lane.count -= 1
        lane.running -= 1
        lane.pauses = 0
        lane.probing = False
        q = self.keys[(item.lane, item.key)]
        q.popleft()
        if q:
            self._push(q[0])
        else:
            del self.keys[(item.lane, item.key)]

    def retry(self, item: Item, outcome: Retry) -> float:
        """Put the item back; returns the delay chosen."""
        lane = self.lanes[item.lane]
        lane.running -= 1
        if outcome.lane:
            mono = time.monotonic()
            if lane.paused_until <= mono:  # the first failure, or a failed probe: back off further
                # jitter: many stages (or many machines) restarting against one server
                pause = backoff.delay(lane.pauses, LANE_BACKOFF_START, LANE_BACKOFF_MAX, jitter=True)
                lane.paused_until = mono + pause
                lane.pauses += 1
                lane.probing = True
            lane.trouble = False  # paused now: workers look at paused_until
            delay = lane.paused_until - mono  # items that were already running wait with the rest
            item.not_before = 0.0
        else:
            delay = outcome.after
            item.not_before = time.time() + delay
        self._push(item)
        return delay

    def next_due(self) -> float | None:
        """Seconds until something may become ready (None: nothing waiting on time)."""
        now, mono = time.time(), time.monotonic()
        waits = []
        for lane in self.lanes.values():
            if lane.waiting:
                waits.append(lane.waiting[0][0] - now)
            if lane.ready and lane.paused_until > mono:
                waits.append(lane.paused_until - mono)
            elif lane.ready and lane.capacity(mono) > 0:
                waits.append(0.0)
        return max(0.0, min(waits)) if waits else None

    def running(self) -> int:
        return sum(lane.running for lane in self.lanes.values())

    def enough(self) -> bool:
        """Every lane with workers that may go on has READ_AHEAD items to go on with: reading may wait."""
        mono = time.monotonic()
        busy = [
            lane.count - len(lane.waiting) >= READ_AHEAD
            for lane in self.lanes.values()
            if lane.workers and lane.paused_until <= mono
        ]
        return bool(busy) and all(busy)

    def only_waiting(self) -> bool:
        """Nothing runs or is ready to run: all that is left waits for a retry time."""
        mono = time.monotonic()
        return all(lane.running == 0 and (not lane.ready or lane.paused_until > mono) for lane in self.lanes.values())


class Workers:
    """The lanes' worker threads: each takes what its lane hands out, works it (``work``) and posts the outcome
    to the runner's loop (``post``: ("done", (item, outcome)), or ("back", item) for an item its lane paused
    for meanwhile)."""

    def __init__(
        self,
        sched: Scheduler,
        work: Callable[[Item], Outcome],
        post: Callable[[tuple[str, Any]], None],
        rep: Reporter,
    ):
        self.sched = sched
        self.work = work
        self.post = post
        self.rep = rep
        self.stopping = False

    def start(self) -> None:
        for lane in self.sched.lanes.values():
            for n in range(lane.workers):
                t = threading.Thread(target=self._run, args=(lane,), name=f"{lane.name}-{n}", daemon=True)
                t.start()
                lane.threads.append(t)

    def _run(self, lane: Lane) -> None:
        while True:
            item = lane.tasks.get()
            if item is None or self.stopping:
                return  # what is still queued is in the inbox: the next run does it
            if lane.trouble or lane.paused_until > time.monotonic():
                # queued before the lane paused (a server down): back to the scheduler, which probes with one
                # item after the back-off, instead of every queued item knocking on its own
                self.post(("back", item))
                continue
            outcome = self.work(item)
            if isinstance(outcome, Retry) and outcome.lane:
                lane.trouble = True  # before the result is posted: the main thread clears it once paused
            self.post(("done", (item, outcome)))

    def stop(self, signalled: bool, grace: float = 10.0) -> None:
        """Idle workers end at once; those in the middle of an item get ``grace`` seconds to finish it (said,
        when ``signalled``: how long, and how to cut it short)."""
        self.stopping = True
        lanes = self.sched.lanes.values()
        for lane in lanes:
            for _ in lane.threads:
                lane.tasks.put(None)
        deadline = time.monotonic() + grace
        if signalled:
            for lane in lanes:
                for t in lane.threads:
                    t.join(max(0.0, min(0.2, deadline - time.monotonic())))
            busy = sum(t.is_alive() for lane in lanes for t in lane.threads)
            if busy:
                self.rep.warn(
                    f"stopping: {busy} item(s) in progress get up to {grace:g} s to finish (Ctrl-C again: stop "
                    f"now); the rest stays queued for the next run"
                )
        for lane in lanes:
            for t in lane.threads:
                t.join(max(0.0, deadline - time.monotonic()))
