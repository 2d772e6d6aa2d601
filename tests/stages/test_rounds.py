"""Worker stages commit in big rounds and read only so far ahead of their workers (issue 18, ranked changes 2
and 7): one commit serves hundreds of results (runner.ROUND_ITEMS), a lone result is committed at once, and
the events in memory stay bounded (lanes.READ_AHEAD, intake.LINES_AHEAD) except for a lane that is paused."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from fileconveyor.delivery import intake, lanes, runner
from fileconveyor.delivery.runner import Done, Item, Retry, Stage
from fileconveyor.errors import Exit
from tests.stages.test_runner import ev, lines, run


class Rounds(Stage):
    """Counts the rounds that finished items (Stage.flush comes once per round, before its record() calls)."""

    name = "fc-test"

    def __init__(self, workers: int = 4, pause: float = 0.0):
        self.workers = workers
        self.pause = pause
        self.rounds = 0
        self.new_round = False
        self.split_calls = 0
        self.worked_at: dict[str, float] = {}
        self.recorded_at: dict[str, float] = {}
        self.gate = threading.Event()
        self.gate.set()

    def lanes(self) -> dict[str, int]:
        return {"": self.workers}

    def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
        self.split_calls += 1
        return super().split(event)

    def work(self, item: Item) -> Done:
        self.gate.wait(30)
        time.sleep(self.pause)
        self.worked_at[item.event["rel"]] = time.monotonic()
        return Done([item.event])

    def flush(self) -> str | None:
        self.new_round = True
        return None

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        self.rounds += self.new_round
        self.new_round = False
        self.recorded_at[item.event["rel"]] = time.monotonic()


def test_results_are_committed_in_big_rounds(tmp_path: Path) -> None:
    """Was: whatever finished within 3 ms, at most one result per worker (4): 2,000 items took 500 rounds or more,
    each a commit of the state file and a write of output lines."""
    stage = Rounds(workers=4, pause=0.0002)
    status, out, _ = run(stage, lines([ev(f"f{i}", i) for i in range(2000)]), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == 2000
    assert stage.rounds <= 2000 // 20, stage.rounds  # 20 results a round on average, at the very least


def test_a_lone_result_is_committed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing else in flight: the round does not wait for company (ROUND_WAIT), so live events are not delayed."""
    monkeypatch.setattr(runner, "ROUND_WAIT", 5.0)
    stage = Rounds(workers=4)
    status, out, _ = run(stage, lines([ev("only", 1)]), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == 1
    assert stage.recorded_at["only"] - stage.worked_at["only"] < 2.0


def test_results_of_slow_items_are_not_held_for_company(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker, items slower than ROUND_WAIT (fc-process --jobs 1 and a 50 ms tool): the next item is queued
    in the lane, which counted as running, so each result waited ROUND_WAIT for company that came only after it,
    its line that much later (25 ms a file), the main thread polling every 2 ms meanwhile."""
    monkeypatch.setattr(runner, "ROUND_WAIT", 0.5)
    stage = Rounds(workers=1, pause=0.7)
    status, out, _ = run(stage, lines([ev(f"f{i}", i) for i in range(5)]), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == 5
    held = sorted(stage.recorded_at[f"f{i}"] - stage.worked_at[f"f{i}"] for i in range(1, 5))
    assert held[len(held) // 2] < 0.3, held  # the old code: 0.5 s each


def test_a_slow_item_does_not_hold_back_the_results_of_others(tmp_path: Path) -> None:
    class OneSlow(Rounds):
        def work(self, item: Item) -> Done:
            if item.event["rel"] == "slow":
                time.sleep(3.0)
            return super().work(item)

    stage = OneSlow(workers=2)
    status, out, _ = run(stage, lines([ev("slow", 1), ev("quick", 2)]), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == 2
    assert stage.recorded_at["quick"] < stage.worked_at["slow"] - 1.0  # committed long before the slow one ended


def test_reading_waits_while_the_workers_have_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event in memory costs about 4 KB: fc-transport read all 10,000 of a scan at once (75 MB)."""
    monkeypatch.setattr(lanes, "READ_AHEAD", 40, raising=False)
    monkeypatch.setattr(intake, "LINES_AHEAD", 30, raising=False)
    stage = Rounds(workers=2)
    stage.gate.clear()  # the workers are stuck on their first items
    result: list[tuple[int, list[dict], str]] = []
    t = threading.Thread(
        target=lambda: result.append(run(stage, lines([ev(f"f{i}", i) for i in range(3000)]), tmp_path / "s.db"))
    )
    t.start()
    time.sleep(1.5)
    taken = stage.split_calls
    stage.gate.set()
    t.join(60)
    status, out, _ = result[0]
    assert status == Exit.OK and len(out) == 3000
    assert 40 <= taken <= 40 + 2 * 30 + 10, taken  # READ_AHEAD items, plus the lines of the round that reached it


def test_a_paused_lane_does_not_stop_the_others_from_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead server holds up only its own lane: its queued items do not count towards READ_AHEAD."""
    monkeypatch.setattr(lanes, "READ_AHEAD", 40, raising=False)
    monkeypatch.setattr(intake, "LINES_AHEAD", 30, raising=False)
    monkeypatch.setattr(lanes, "LANE_BACKOFF_START", 0.2)
    monkeypatch.setattr(lanes, "LANE_BACKOFF_MAX", 0.5)
    n = 400

    class TwoLanes(Stage):
        name = "fc-test"

        def __init__(self) -> None:
            self.up_done = 0
            self.up_all_done_while_down = False
            self.deadline = time.monotonic() + 30

        def lanes(self) -> dict[str, int]:
            return {"up": 1, "down": 1}

        def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
            key = event["rel"].encode()
            return [("up", key, event), ("down", key, event)]

        def work(self, item: Item) -> Done | Retry:
            if item.lane == "up":
                self.up_done += 1
                return Done([item.event])
            if self.up_done < n and time.monotonic() < self.deadline:
                return Retry("server down", lane=True)
            self.up_all_done_while_down = self.up_all_done_while_down or self.up_done == n
            return Done([])

    stage = TwoLanes()
    status, out, _ = run(stage, lines([ev(f"f{i}", i) for i in range(n)]), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == n
    assert stage.up_all_done_while_down


def test_lines_from_a_pipe_reach_the_loop_a_batch_per_read(tmp_path: Path) -> None:
    """The reading thread posted a message per line: each a queue put and get, a look at the queue's size and
    at the room event, and the GIL passed between the threads, which cost more than a pass-through's work on the
    line.  Now what one read brought goes as one message (in pieces of LINES_AHEAD / 8 lines at most)."""
    import io
    import os

    from fileconveyor.delivery.runner import Options, Runner
    from fileconveyor.report import Reporter
    from fileconveyor.stopping import Stopper

    n = 2000
    data = lines([ev(f"f{i}", i) for i in range(n)])
    r, w = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    feeder.start()
    with os.fdopen(r, "rb") as stdin:
        runner = Runner(
            Rounds(),
            Options(state_path=tmp_path / "s.db"),
            stdin,
            io.BytesIO(),
            Reporter("fc-t", io.StringIO(), 1),
            Stopper(),
        )
        msgs: list[tuple[str, object]] = []

        def post(msg: tuple[str, object]) -> None:
            msgs.append(msg)
            if msg[0] == "lines":
                runner.input.taken += len(msg[1])  # type: ignore[arg-type]  # as the loop does

        runner.input.read(post)
        runner.state.close()
    feeder.join(10)
    got = [x for kind, payload in msgs if kind != "eof" for x in (payload if kind == "lines" else [payload])]
    assert b"".join(got) == data
    assert len(msgs) <= n // 20, len(msgs)  # was 2,001: one per line
