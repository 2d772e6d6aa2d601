"""The stage runner: order per path, retries, lane back-off, drain, replays and
acknowledgements, with small stages written for the test on the real runner."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.durable import Acknowledger
from fileconveyor.delivery.lanes import Scheduler
from fileconveyor.delivery.runner import Done, Item, Options, Retry, Runner, Stage, StageContext
from fileconveyor.errors import Exit
from fileconveyor.report import Reporter
from fileconveyor.stopping import Stopper


def ev(rel: str, n: int = 0, **extra: object) -> dict:
    e = {"v": 1, "id": f"{rel}-{n}", "kind": "modified", "source": "s", "root": "/r", "path": f"/r/{rel}", "rel": rel}
    e["n"] = n
    e.update(extra)
    return e


def lines(events: list[dict]) -> bytes:
    return b"".join(E.encode(e) for e in events)


def run(stage: Stage, data: bytes, state: Path, **opts: object) -> tuple[int, list[dict], str]:
    out, err = io.BytesIO(), io.StringIO()
    stop = Stopper()
    runner = Runner(stage, Options(state_path=state, **opts), io.BytesIO(data), out, Reporter("fc-t", err, 1), stop)
    status = runner.run()
    return status, [E.decode(x) for x in out.getvalue().splitlines()], err.getvalue()


class Recorder(Stage):
    """Works in threads, records the order it saw events of each path in."""

    name = "fc-test"

    def __init__(self, workers: int = 4, fail_first: int = 0, down_for: float = 0.0):
        self.workers = workers
        self.fail_first = fail_first
        self.down_until = time.monotonic() + down_for
        self.failed_calls = 0
        self.seen: dict[str, list[int]] = {}
        self.calls: list[float] = []
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}

    def lanes(self) -> dict[str, int]:
        return {"": self.workers}

    def work(self, item: Item) -> Done | Retry:
        e = item.event
        key = f"{e['rel']}#{e['n']}"
        with self.lock:
            self.calls.append(time.monotonic())
            if time.monotonic() < self.down_until:
                self.failed_calls += 1
                return Retry("server down", lane=True)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] <= self.fail_first:
                return Retry("not yet", after=0.01)
        time.sleep(0.001 * (e["n"] % 3))  # uneven work so threads really overtake each other
        with self.lock:
            self.seen.setdefault(e["rel"], []).append(e["n"])
        return Done([e])


def test_per_path_order_holds_with_many_workers(tmp_path: Path) -> None:
    events = [ev(f"f{i % 7}", i) for i in range(300)]
    stage = Recorder(workers=8, fail_first=1)
    status, out, _ = run(stage, lines(events), tmp_path / "s.db")
    assert status == Exit.OK
    for rel, ns in stage.seen.items():
        assert ns == sorted(ns), f"{rel} worked out of order: {ns}"
    assert sorted(e["n"] for e in out) == list(range(300))
    # the output of one path is in order too
    for i in range(7):
        ns = [e["n"] for e in out if e["rel"] == f"f{i}"]
        assert ns == sorted(ns)


def test_a_lane_in_trouble_backs_off_instead_of_storming(tmp_path: Path) -> None:
    events = [ev(f"f{i}", i) for i in range(50)]
    stage = Recorder(workers=8, down_for=3.0)
    status, out, _ = run(stage, lines(events), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == 50
    # the first round hands out 8 items to run and more queued behind them: at most the 8 that started before
    # the first failure knock (the queued ones go back), then one probe per pause of 0.5-1, 1-2, 2-4 s
    # (exponential with jitter): at most 3 more calls while down
    assert 1 <= stage.failed_calls <= 8 + 3, stage.failed_calls
    assert len(stage.calls) == 50 + stage.failed_calls


def test_work_left_at_the_end_stays_queued_and_is_done_next_run(tmp_path: Path) -> None:
    class Never(Stage):
        name = "fc-test"

        def lanes(self) -> dict[str, int]:
            return {"": 2}

        def work(self, item: Item) -> Retry:
            return Retry("server down", lane=True)

    events = [ev(f"f{i}", i) for i in range(5)]
    status, out, err = run(Never(), lines(events), tmp_path / "s.db", drain_timeout=0.3)
    assert status == Exit.RETRY and out == []
    assert "5 item(s) still waiting" in err
    stage = Recorder()
    status, out, _ = run(stage, b"", tmp_path / "s.db")
    assert status == Exit.OK
    assert sorted(e["n"] for e in out) == list(range(5))


def test_inline_stage_keeps_order_behind_a_retry(tmp_path: Path) -> None:
    class Once(Stage):
        name = "fc-test"

        def __init__(self) -> None:
            self.failed: set[str] = set()

        def work(self, item: Item) -> Done | Retry:
            e = item.event
            if e["n"] == 0 and "x" not in self.failed:
                self.failed.add("x")
                return Retry("later", after=0.05)
            return Done([e])

    events = [ev("a", 0), ev("b", 1), ev("a", 2), ev("a", 3)]
    status, out, _ = run(Once(), lines(events), tmp_path / "s.db")
    assert status == Exit.OK
    assert [e["n"] for e in out if e["rel"] == "a"] == [0, 2, 3]
    assert out[0]["n"] == 1  # b was not held up by a


def test_outputs_carry_a_hop_and_a_reader_drops_replays(tmp_path: Path) -> None:
    class Pass(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            return Done([item.event])

    _, first, _ = run(Pass(), lines([ev("a", 1), ev("b", 2)]), tmp_path / "w.db")
    assert [e["hop"]["seq"] for e in first] == [1, 2]
    assert first[0]["hop"]["from"] == str(tmp_path / "w.db")
    replayed = lines(first) + lines(first)  # the writer sent everything twice
    _, second, _ = run(Pass(), replayed, tmp_path / "r.db")
    assert [e["n"] for e in second] == [1, 2]
    # the reader acknowledged what it holds in the writer's state file
    acks = sqlite3.connect(tmp_path / "w.db").execute("SELECT reader, seq FROM acks").fetchall()
    assert acks == [(str(tmp_path / "r.db"), 2)]
    # unknown fields pass through; the incoming hop is replaced by the reader's own
    assert second[0]["hop"]["from"] == str(tmp_path / "r.db")


def test_writer_replays_what_its_reader_has_not_acknowledged(tmp_path: Path) -> None:
    class Pass(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            return Done([item.event])

    _, first, _ = run(Pass(), lines([ev(f"f{i}", i) for i in range(10)]), tmp_path / "w.db")
    # a reader took the first 4, then died before taking the rest
    run(Pass(), lines(first[:4]), tmp_path / "r.db")
    _, again, _ = run(Pass(), b"", tmp_path / "w.db")  # the writer restarts with no new input
    assert [e["n"] for e in again] == [4, 5, 6, 7, 8, 9]
    assert again[0]["hop"]["for"]  # tagged: the replay a restarted reader waits for
    _, got, _ = run(Pass(), lines(again), tmp_path / "r.db")
    assert [e["n"] for e in got] == [4, 5, 6, 7, 8, 9]


def test_a_writer_waits_at_the_end_for_a_reader_heard_from_in_this_run(tmp_path: Path) -> None:
    class Pass(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            return Done([item.event])

    _, first, _ = run(Pass(), lines([ev(f"f{i}", i) for i in range(4)]), tmp_path / "w.db")
    run(Pass(), lines(first[:2]), tmp_path / "r.db")  # the reader holds 2 of 4
    # a reader heard from before this run does not hold the writer up
    status, _, _ = run(Pass(), lines([ev("g", 9)]), tmp_path / "w.db", drain_timeout=0.5)
    assert status == Exit.OK
    # a reader active during the run that stays behind: the writer waits, then says so
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.execute("UPDATE acks SET at=at+3600")
    conn.commit()
    status, _, err = run(Pass(), b"", tmp_path / "w.db", drain_timeout=0.5)
    assert status == Exit.RETRY
    assert "did not acknowledge all our output" in err


def test_a_crashing_stage_fails_the_event_not_the_run(tmp_path: Path) -> None:
    class Buggy(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            if item.event["n"] == 1:
                raise ZeroDivisionError("boom")
            return Done([item.event])

    status, out, err = run(Buggy(), lines([ev("a", 0), ev("b", 1), ev("c", 2)]), tmp_path / "s.db")
    assert status == Exit.EVENTS_FAILED
    assert [e["n"] for e in out] == [0, 1, 2]
    assert "boom" in out[1]["error"] and "error" not in out[0]
    assert "unexpected failure" in err


class Later(Stage):
    """Each event's work finishes at once; a timed thread of the stage emits one more event per event, ``delay``
    seconds later, with a row of its own written in the same transaction (StageContext.emit and add_timed), and
    one more from close(), after the loop has ended."""

    name = "fc-test"
    migrations = ("CREATE TABLE later(n INTEGER PRIMARY KEY)",)

    def __init__(self, delay: float):
        self.delay = delay
        self.timers: list[threading.Timer] = []
        self.lock = threading.Lock()
        self.due: dict[int, float] = {}  # n -> when its later event is emitted (wall clock)
        self.ctx: StageContext | None = None
        self.emitters: set[str] = set()

    def lanes(self) -> dict[str, int]:
        return {"": 2}

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx
        ctx.add_timed(self, "later event(s)")

    def work(self, item: Item) -> Done:
        n = item.event["n"]
        with self.lock:
            self.due[n] = time.time() + self.delay
        timer = threading.Timer(self.delay, self._fire, args=(n,))
        timer.daemon = True
        self.timers.append(timer)
        timer.start()
        return Done([item.event])

    def _fire(self, n: int) -> None:
        assert self.ctx is not None
        self.emitters.add(threading.current_thread().name)
        self.ctx.emit([ev(f"later{n}", n)], also=lambda db: db.execute("INSERT INTO later(n) VALUES (?)", (n,)))
        with self.lock:
            del self.due[n]

    # the Timed protocol
    def pending(self) -> int:
        with self.lock:
            return len(self.due)

    def due_before(self, deadline: float) -> int:
        with self.lock:
            return sum(1 for due in self.due.values() if due <= deadline)

    def hurry(self) -> None:
        pass

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        assert self.ctx is not None
        self.ctx.emit([ev("closing", 99)], also=lambda db: db.execute("INSERT INTO later(n) VALUES (99)"))


def test_events_emitted_by_a_stage_thread_and_from_close_are_committed_and_written(tmp_path: Path) -> None:
    stage = Later(0.3)
    status, out, _ = run(stage, lines([ev("a", 1), ev("b", 2)]), tmp_path / "s.db")
    assert status == Exit.OK
    # the end of the input waited for the timed work (add_timed), and the loop wrote what the timers emitted
    assert sorted(e["rel"] for e in out[:2]) == ["a", "b"]
    assert sorted(e["rel"] for e in out[2:4]) == ["later1", "later2"]
    assert out[4]["rel"] == "closing"
    assert not any(name == "MainThread" for name in stage.emitters)
    seqs = [e["hop"]["seq"] for e in out]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    db = sqlite3.connect(tmp_path / "s.db")
    # each emitted event is in the outbox with the stage's own row: committed before it was written
    assert sorted(n for (n,) in db.execute("SELECT n FROM later")) == [1, 2, 99]
    rows = db.execute("SELECT line FROM outbox ORDER BY seq")  # (a round's lines in a row, each with its newline)
    outbox = [E.decode(line)["rel"] for (blob,) in rows for line in bytes(blob).split(b"\n")[:-1]]
    assert sorted(outbox) == sorted(e["rel"] for e in out)


def test_timed_work_left_after_the_drain_time_means_try_again(tmp_path: Path) -> None:
    stage = Later(30.0)  # not due within the drain time: no waiting for it, and exit 4 with a warning
    started = time.monotonic()
    status, out, err = run(stage, lines([ev("a", 1)]), tmp_path / "s.db", drain_timeout=20.0)
    assert status == Exit.RETRY
    assert time.monotonic() - started < 10
    assert "1 later event(s) not done within the drain time" in err
    assert [e["rel"] for e in out] == ["a", "closing"]


def test_queued_items_wait_for_a_paused_lane(tmp_path: Path) -> None:
    # Items handed out ahead of the workers (AHEAD_PER_WORKER) must not each try a lane that just failed: with one
    # worker and many queued items, a server down for 1.5 s sees only the first failure and the probes.
    events = [ev(f"f{i}", i) for i in range(40)]
    stage = Recorder(workers=1, down_for=1.5)
    status, out, _ = run(stage, lines(events), tmp_path / "s.db")
    assert status == Exit.OK and len(out) == 40
    assert 1 <= stage.failed_calls <= 1 + 3, stage.failed_calls


def test_the_drain_timeout_counts_from_the_last_progress_not_the_end_of_input(tmp_path: Path) -> None:
    """Finding 6 of issue 17: a reader that takes minutes (YUI, Closure) but keeps acknowledging is progress:
    the writer waits for it and exits 0, though the whole wait is far longer than --drain-timeout."""

    class Pass(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            return Done([item.event])

    w = tmp_path / "w.db"
    run(Pass(), b"", w)  # the writer's state file exists
    epoch = sqlite3.connect(w).execute("SELECT v FROM meta WHERE k='epoch'").fetchone()[0]
    reader = Acknowledger(str(tmp_path / "r.db"), lambda key, text: None, vouched=True)  # a library caller
    reader.send({str(w): (epoch, 0)}, force=True)
    conn = sqlite3.connect(w)
    conn.execute("UPDATE acks SET at=at+3600")  # heard from during the coming run: the writer waits for it
    conn.commit()

    def slow_reader() -> None:  # one line acknowledged every 0.25 s: 2.5 s for 10 lines, drain timeout 0.8 s
        time.sleep(0.3)
        for seq in range(1, 11):
            time.sleep(0.25)
            reader.send({str(w): (epoch, seq)}, force=True)

    t = threading.Thread(target=slow_reader)
    started = time.monotonic()
    t.start()
    status, out, err = run(Pass(), lines([ev(f"f{i}", i) for i in range(10)]), w, drain_timeout=0.8)
    waited = time.monotonic() - started
    t.join()
    reader.close()
    assert len(out) == 10
    assert status == Exit.OK, err
    assert waited > 2.0  # it did wait for the reader, beyond the drain timeout
    # a reader that stops acknowledging still ends the wait, drain timeout after its last acknowledgement
    conn.execute("UPDATE acks SET at=at+3600")
    conn.commit()
    started = time.monotonic()
    status, _, err = run(Pass(), lines([ev("g", 1)]), w, drain_timeout=0.5)
    assert status == Exit.RETRY and "did not acknowledge all our output" in err
    assert time.monotonic() - started < 5


class Payload(Stage):
    """Hands what work() did to record() in its outcome, and keeps what start() was given."""

    name = "fc-test"
    migrations = ("CREATE TABLE done(rel TEXT PRIMARY KEY, said TEXT NOT NULL)",)

    def __init__(self) -> None:
        self.ctx: object = None

    def lanes(self) -> dict[str, int]:
        return {"": 2}

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx

    def work(self, item: Item) -> Done:
        return Done([item.event], payload=f"worked on {item.event['rel']} in {threading.current_thread().name}")

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        db.execute("INSERT INTO done(rel, said) VALUES (?, ?)", (item.event["rel"], outcome.payload))


def test_a_stage_gets_a_context_not_the_runner_and_its_work_reaches_record_in_the_outcome(tmp_path: Path) -> None:
    stage = Payload()
    status, out, err = run(stage, lines([ev(f"f{n}") for n in range(20)]), tmp_path / "s.db")
    assert status == Exit.OK, err
    assert len(out) == 20
    # what the stage may use, and nothing that leads to the runner's insides (its state, scheduler, queues)
    assert isinstance(stage.ctx, StageContext) and not isinstance(stage.ctx, Runner)
    assert not any(isinstance(getattr(stage.ctx, f), Runner | Scheduler) for f in StageContext.__slots__)
    with sqlite3.connect(tmp_path / "s.db") as db:
        said = dict(db.execute("SELECT rel, said FROM done"))
    assert sorted(said) == sorted(f"f{n}" for n in range(20))
    assert all(text.startswith(f"worked on {rel} in -") for rel, text in said.items())  # a worker's (lane "")


class PassThrough(Stage):
    name = "fc-pass"

    def work(self, item: Item) -> Done:
        return Done([item.event])


def test_a_replay_sends_an_outbox_line_that_no_longer_decodes_as_it_is(tmp_path: Path) -> None:
    """A replay tagged for a new reader decodes each outbox line to add hop.for; a line an older version stored,
    which this one refuses, went out of the replay without its seq and the stage died (ValueError) at every
    start.  Now it goes as it is (its reader reports it as a bad line) and the replay goes on."""
    state = tmp_path / "s.db"
    status, out, _ = run(PassThrough(), lines([ev("a")]), state)
    assert status == Exit.OK and len(out) == 1
    db = sqlite3.connect(state)
    (epoch,) = db.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()
    db.execute("INSERT INTO outbox(seq, line) VALUES (2, ?)", (b'{"v":1,"kind":"created"}\n',))
    db.execute("INSERT INTO outbox(seq, line) VALUES (3, ?)", (lines([{**ev("b"), "hop": out[0]["hop"]}]),))
    # a reader new to this process that acknowledged nothing: everything is re-sent to it, tagged
    db.execute(
        "INSERT INTO acks(reader, epoch, seq, at, session) VALUES ('/r.db', ?, 0, ?, 'abc')", (epoch, time.time())
    )
    db.commit()
    db.close()
    stdout = io.BytesIO()
    runner = Runner(
        PassThrough(),
        Options(state_path=state, drain_timeout=0.5),
        io.BytesIO(b""),
        stdout,
        Reporter("fc-t", io.StringIO(), 1),
        Stopper(),
    )
    runner.run()
    sent = stdout.getvalue().splitlines()
    assert sent[1] == b'{"v":1,"kind":"created"}'
    assert [E.decode(sent[i])["hop"].get("for") for i in (0, 2)] == [["abc"], ["abc"]]
    assert E.decode(sent[2])["rel"] == "b"


class _Intake:
    """Stands in for the runner's Intake in the housekeeping test: a spy that records the acknowledgements asked
    for and, like an Acknowledger whose last write to the writer is younger than ACK_INTERVAL, writes none
    unless forced (so the stage stays unacknowledged)."""

    def __init__(self) -> None:
        self.asked: list[bool] = []
        self.behind = True

    def acknowledge(self, force: bool = False) -> set[str]:
        self.asked.append(force)
        if force:
            self.behind = False
        return set()

    def unacknowledged(self) -> bool:
        return self.behind


def test_a_periodic_acknowledgement_not_written_still_leaves_a_wake_up_for_the_quiet_one(tmp_path: Path) -> None:
    """The loop's periodic acknowledgement may write nothing (the Acknowledger's own interval per writer); with
    all done and no wake-up set, the loop slept its full second while the writer waited at its end for this
    acknowledgement (fc-watch | fc-transport | fc-record: 1.2 s more in one run in four).  Now the quiet
    acknowledgement is still scheduled, and forced once the input has been quiet IDLE_ACK_QUIET."""
    from fileconveyor.delivery import runner as R

    class Pass(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            return Done([item.event])

    stop = Stopper()
    runner = Runner(
        Pass(),
        Options(state_path=tmp_path / "s.db"),
        io.BytesIO(b""),
        io.BytesIO(),
        Reporter("fc-t", io.StringIO(), 1),
        stop,
    )
    try:
        spy = _Intake()
        runner.input = spy  # type: ignore[assignment]
        now = time.monotonic()
        runner._line_at = now  # a line just came: not quiet yet
        runner._next_ack = now - 1  # the periodic acknowledgement is due
        # (the other periodic work not due: the refresh of our acknowledgements forces one too)
        runner._next_refresh = runner._next_sessions = runner._next_prune = now + 3600
        runner._housekeeping(False)
        assert spy.asked == [False]  # asked, not written (the spy, like a throttled Acknowledger)
        assert runner._wake_at is not None and runner._wake_at <= runner._line_at + R.IDLE_ACK_QUIET
        runner._line_at = time.monotonic() - R.IDLE_ACK_QUIET  # quiet now (the loop woke at _wake_at)
        runner._housekeeping(False)
        assert spy.asked == [False, True] and not spy.behind  # forced: the writer has it
    finally:
        runner.state.close()


def test_a_stage_at_its_end_looks_for_its_readers_acknowledgements_often_at_first(tmp_path: Path) -> None:
    """A stage whose input ended waits for its readers' acknowledgements: they come within a few tens of ms, or
    0.1 s after our end from a reader whose input a wrapper such as /usr/bin/time holds open (IDLE_ACK_QUIET).
    Its looks doubled from 5 ms (at 10, 30, 70, 150 ms): such an acknowledgement was seen up to half the wait
    late, 50 ms at 0.1 s, at the end of every pipeline run.  Now every END_POLL for the first END_POLL_FAST,
    then backing off to END_POLL_MAX for a reader that takes long (a minute of YUI downstream)."""
    from fileconveyor.delivery import runner as R

    class Pass(Stage):
        name = "fc-test"

        def work(self, item: Item) -> Done:
            return Done([item.event])

    runner = Runner(
        Pass(),
        Options(state_path=tmp_path / "s.db"),
        io.BytesIO(b""),
        io.BytesIO(),
        Reporter("fc-t", io.StringIO(), 1),
        Stopper(),
    )
    try:
        runner._eof_at = time.monotonic()  # our input just ended
        waited, seen = 0.0, None
        while seen is None:  # the reader acknowledges 0.1 s after our end: when do we see it?
            runner._end_looked(moved=False)
            waited += runner._end_poll
            if waited >= 0.1:
                seen = waited
        assert seen - 0.1 <= R.END_POLL + 1e-9
        runner._eof_at = time.monotonic() - 60  # a reader slow for a minute: looks back off
        for _ in range(10):
            runner._end_looked(moved=False)
        assert runner._end_poll == R.END_POLL_MAX
        runner._end_looked(moved=True)  # it acknowledged more: often again
        assert runner._end_poll == R.END_POLL
    finally:
        runner.state.close()
