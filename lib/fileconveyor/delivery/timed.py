"""Work a stage does at a set time, on a thread of its own: fc-transport's deletion of
superseded remote names (``--delete-old-after``) and fc-record's deletion of synced
source files (``--delete-source-after``).  The schedule itself lives in a table of the
stage (or of the synced-files database), so a restart loses nothing: this only keeps
the pending items in time order and carries them out when due.  A stage hands it to its runner
(``StageContext.add_timed``) so that the end of the input waits, within --drain-timeout, for what falls due."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from ..report import Reporter
from .stage import Timed

T = TypeVar("T")


class TimedWork(Generic[T]):
    """A thread that runs ``_do(item)`` for each item once its time (wall clock) has come."""

    thread_name = "timed-work"

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, T]] = []
        self._n = 0  # ties in time keep the order items came in, and items never get compared
        self.cond = threading.Condition()
        self.stopping = False
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def schedule(self, due: float, item: T) -> None:
        with self.cond:
            self._n += 1
            heapq.heappush(self.heap, (due, self._n, item))
            self.cond.notify()

    def pending(self) -> int:
        with self.cond:
            return len(self.heap) + self.busy

    def due_before(self, deadline: float) -> int:
        """How many pending items fall due before ``deadline`` (the one being carried out included): what the
        stage's runner waits for at the end of the input (Runner.add_timed)."""
        with self.cond:
            return sum(1 for due, _, _ in self.heap if due <= deadline) + self.busy

    def hurry(self) -> None:
        """The input ended: nothing here waits for company (items are due at their own times)."""

    def wait_due(self, until: float, stop: Callable[[], bool]) -> None:
        """Block while items due before ``until`` remain, or until stopped."""
        while not stop():
            with self.cond:
                if not self.busy and (not self.heap or self.heap[0][0] > until):
                    return
                self.cond.wait(0.2)

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(10)

    def _do(self, item: T) -> float | None:
        """Carry out one item; a time to try it again at, or None when it is done with."""
        raise NotImplementedError

    def _failed(self, item: T, exc: Exception) -> None:
        """``_do`` raised: say so (the item stays in its table for the next run)."""

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (not self.heap or self.heap[0][0] > time.time()):
                    self.cond.wait(min(5.0, self.heap[0][0] - time.time()) if self.heap else 5.0)
                if self.stopping:
                    return
                _, _, item = heapq.heappop(self.heap)
                self.busy = True
            again = None
            try:
                again = self._do(item)
            except Exception as exc:  # a full disk, a locked database: the item is kept in its table
                self._failed(item, exc)
            with self.cond:
                self.busy = False
                if again is not None:
                    self._n += 1
                    heapq.heappush(self.heap, (again, self._n, item))
                self.cond.notify_all()


class TimedWaits:
    """The stage's timed work that the end of the input waits for (``StageContext.add_timed``)."""

    def __init__(self, rep: Reporter, state_path: Path, stage_name: str):
        self.rep = rep
        self.state_path = state_path
        self.stage_name = stage_name
        self.works: list[tuple[Timed, str]] = []
        self.hurried = False  # the input ended and every item is done: draining what is left
        self.hurried_works: set[int] = set()

    def add(self, work: Timed, what: str) -> None:
        """Count ``work`` toward the end of the input: once the input ended and every item is done, the stage
        goes on while ``work`` has something due within --drain-timeout, then exits 4 (what is left stays for
        the next run, as queued items do) with a warning: "N <what> ...".  Call from Stage.start.  Work added
        later is hurried (``hurry``) only once the earlier has nothing more due: add what feeds other work first."""
        self.works.append((work, what))

    def left(self, drain_timeout: float, eof_at: float) -> bool | None:
        """After the input and every item: None when no timed work is left; True while some of it is due within
        the drain time; False when the rest must wait for the next run (said in a warning)."""
        if not self.works:
            return None
        self.hurried = True
        left_s = drain_timeout - (time.monotonic() - eof_at)
        deadline = time.time() + left_s
        # hurried in the order they were added, each once those before it have nothing more due: what they do
        # may feed it (an old name deleted gives a path to invalidate), and one batch then carries it all
        for i, (work, _) in enumerate(self.works):
            if i not in self.hurried_works:
                if any(w.due_before(deadline) for w, _ in self.works[:i]):
                    break
                self.hurried_works.add(i)
                work.hurry()
        left = [(work.pending(), work, what) for work, what in self.works]
        left = [(n, work, what) for n, work, what in left if n]
        if not left:
            return None
        if left_s > 0 and any(work.due_before(deadline) for _, work, _ in left):
            return True
        for n, _, what in left:
            self.rep.warn(
                f"{n} {what} not done within the drain time (--drain-timeout); they stay in {self.state_path} "
                f"and are done when {self.stage_name} runs again"
            )
        return False
