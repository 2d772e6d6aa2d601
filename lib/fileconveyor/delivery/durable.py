"""Inbox, outbox and acknowledgements: the state every fc stage after fc-watch keeps.

See docs/durability.md for the design.  In short, for a stage S between a writer W
and a reader R:

- an event read by S is committed to S's **inbox** (or straight to its outbox, when
  S finishes it at once) before S does anything with it, together with the highest
  ``hop.seq`` S has taken from W (its *high-water mark*, per writer);
- S then writes an **acknowledgement** of that mark into W's state file (W's
  ``acks`` table), so W knows what it may forget;
- S's output lines are committed to its **outbox**, each with a new ``hop``
  (``{"from": S's state file, "epoch": ..., "seq": n}``), before they are written;
- on start (and when a FIFO reader comes back) S re-sends the outbox lines its
  readers have not acknowledged; R drops those at or below its mark for S.

So every event is, at every moment, in some stage's state file.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path

from ..plain import Value
from ..state import Migration, State
from . import ack_check, acks, quarantine, runs
from .effects import Effects

MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE meta(k TEXT PRIMARY KEY, v);
    INSERT INTO meta(k, v) VALUES ('epoch', lower(hex(randomblob(8)))), ('written', 0);
    -- work read but not finished; lane/key keep per-path order, not_before the retry time
    CREATE TABLE inbox(
        id INTEGER PRIMARY KEY,
        line BLOB NOT NULL,
        lane TEXT NOT NULL,
        key BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    -- lines committed for our readers, kept until every reader has acknowledged them
    CREATE TABLE outbox(seq INTEGER PRIMARY KEY, line BLOB NOT NULL);
    -- per writer we read from: the highest hop.seq taken (duplicates at or below it are dropped)
    CREATE TABLE upstream(origin TEXT PRIMARY KEY, epoch TEXT NOT NULL, hwm INTEGER NOT NULL, seen REAL NOT NULL);
    """,
    # written by our readers: the highest seq of ours each one holds safely (delivery/acks.py).  Released as the
    # first migration's acks table, then this one's ALTER adding its session: acks.migrate does either.
    acks.migrate,
    quarantine.MIGRATION,
    acks.migrate,  # acks.through: end-to-end acknowledgements (delivery/through.py)
    # per writer: the highest hop.seq whose work may have begun before the commit that takes its line (a stage
    # that works items at once in the main thread: Stage.quick_works); see Intake.begin_work
    """
    CREATE TABLE working(origin TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL);
    """,
    # an outbox row holds a run of ``n`` lines (the seqs up to its ``seq``, each line ending in its newline): a
    # round's lines in one row instead of one row each (add_outbox); a row of an older file is one line
    """
    ALTER TABLE outbox ADD COLUMN n INTEGER NOT NULL DEFAULT 1;
    """,
]

MAX_UNACKED = 1_000_000  # outbox lines kept for a reader that stopped acknowledging
# A reader new to us asks, on its first line, for the lines before it (intake.py): at most this many.
FIRST_CONTACT_WINDOW = 120_000  # > a pipe buffer + a reader's queue (Options.max_queue) of lines
# Lines every reader acknowledged are kept this long (and at most FIRST_CONTACT_WINDOW of them) for a reader that
# has not registered yet: behind fc-tee, a branch whose reader started after fc-tee's --first-wait got none of
# them, and no reader we knew was missing them (a typo in that branch's first run lost them for good).
RETAIN_ACKED = 3600.0
RETAIN_STEP = 60.0  # seconds between the (time, seq) marks kept for that, in the state file (meta "made")
MAX_UNCLAIMED = 20_000  # lines kept while no File Conveyor reader has acknowledged (jq, a terminal, a slow start)
ACK_INTERVAL = 0.2  # seconds between acknowledgements to one writer
ABSENT = "does not write our input now (our state has it from an earlier run)"  # (Acknowledger._verify)


class Hop(Value):
    """Where a line came from: the writer's state file, its epoch and the line's seq there (the line's ``hop``)."""

    __slots__ = ("epoch", "origin", "seq")
    _fields = ("origin", "epoch", "seq")

    def __init__(self, origin: str, epoch: str, seq: int):
        self.origin = origin
        self.epoch = epoch
        self.seq = seq

    @classmethod
    def from_event(cls, ev: dict) -> Hop | None:
        hop = ev.get("hop")
        if not isinstance(hop, dict):
            return None
        origin, epoch, seq = hop.get("from"), hop.get("epoch"), hop.get("seq")
        if not isinstance(origin, str) or not isinstance(epoch, str) or type(seq) is not int:
            return None
        return cls(origin, epoch, seq)


class StageState(State):
    """A stage's state file: the durable tables above plus the stage's own."""

    def __init__(
        self,
        path: Path,
        stage_migrations: Sequence[str] = (),
        *,
        name: str = "stage",
        out: ack_check.Ident | None = None,
    ):
        self.effects = Effects()  # what a transaction changes outside the file (record's after_commit)
        super().__init__(Path(path).absolute(), MIGRATIONS, parts={name: stage_migrations}, checkpoints=True)
        self.origin = str(self.path)
        self.epoch = self._meta("epoch")
        self.written = int(self._meta("written"))
        (self.next_seq,) = self.db.execute("SELECT coalesce(max(seq), 0) + 1 FROM outbox").fetchone()
        self.next_seq = max(self.next_seq, self.written + 1)
        self._out = out
        self._ended = False  # runs.ending said already (end_output)
        # (time, our last seq then), every RETAIN_STEP: kept in the file, so that a run that lasts less than
        # RETAIN_ACKED (cron) still forgets what earlier runs made over RETAIN_ACKED ago
        self._made: collections.deque[tuple[float, int]] = collections.deque(_marks(self._meta("made")))
        self._set_meta(runs.current(self.next_seq - 1, out))  # before any line of this run is written (runs.py)

    @property
    def out(self) -> ack_check.Ident | None:
        """The pipe or FIFO our lines go into; None for anything else (a file, /dev/null, a terminal)."""
        return self._out

    def close(self) -> None:
        """Close the file, saying first where our lines went on (runs.ending): our output stays open until the
        process's exit, and a reader that looks meanwhile finds us without the file."""
        if self._out is not None and not self._ended and getattr(self, "db", None) is not None:
            with contextlib.suppress(sqlite3.Error, OSError):  # at worst a reader refuses us: a replay, next run
                self._set_meta(runs.ending(self._out))
        super().close()

    def end_output(self, after: list[ack_check.Ident] | None = None) -> None:
        """Say where our lines went on (runs.ending; ``after``: those pipes, just looked up) now, before we close
        our output ahead of the state file (sending.Sending: close_early, release): its readers may be gone by the
        time we close the file."""
        if self._out is not None and not self._ended:
            self._set_meta(runs.ending(self._out, after))
            self._ended = True

    def _set_meta(self, items: dict[str, str | int]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO meta(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", items.items()
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """State.transaction, with the effects registered inside it done after its COMMIT or ROLLBACK."""
        with self.effects.transaction(super().transaction) as db:
            yield db

    # -- schema ------------------------------------------------------------------------

    def _meta(self, key: str) -> str:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return "" if row is None else str(row[0])

    # -- reading side --------------------------------------------------------------------

    def load_upstream(self) -> dict[str, tuple[str, int]]:
        return {o: (e, h) for o, e, h in self.db.execute("SELECT origin, epoch, hwm FROM upstream")}

    def save_upstream(self, db: sqlite3.Connection, marks: dict[str, tuple[str, int]]) -> None:
        now = time.time()
        db.executemany(
            "INSERT INTO upstream(origin, epoch, hwm, seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(origin) DO UPDATE SET epoch=excluded.epoch, hwm=excluded.hwm, seen=excluded.seen",
            [(o, e, h, now) for o, (e, h) in marks.items()],
        )

    def load_working(self) -> dict[str, tuple[str, int]]:
        return {o: (e, s) for o, e, s in self.db.execute("SELECT origin, epoch, seq FROM working")}

    def save_working(self, db: sqlite3.Connection, marks: dict[str, tuple[str, int]]) -> None:
        db.executemany(
            "INSERT INTO working(origin, epoch, seq) VALUES (?, ?, ?) "
            "ON CONFLICT(origin) DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq",
            [(o, e, s) for o, (e, s) in marks.items()],
        )

    # -- writing side --------------------------------------------------------------------

    def hop(self, tag: list[str] | None = None) -> dict:
        """The hop of our next output line (a rolled-back transaction leaves a gap: harmless)."""
        seq = self.next_seq
        self.next_seq += 1
        hop = {"from": self.origin, "epoch": self.epoch, "seq": seq}
        if tag:
            hop["for"] = tag
        return hop

    def add_outbox(self, db: sqlite3.Connection, lines: Sequence[tuple[int, bytes]]) -> None:
        """Store ``lines`` (their seqs rising, each line ending in its newline): a run of consecutive seqs in one
        row, keyed by its last seq, so that ``max(seq)``, pruning below a seq and replays keep working on rows.
        A row a line cost 2-3 us a line (a round's 400-odd INSERTs), the run's one row less than a third of it."""
        if not lines:
            return
        if lines[-1][0] - lines[0][0] == len(lines) - 1:  # rising seqs: consecutive, the usual round
            runs = [lines]
        else:  # a gap (a line of a round redone carefully that was set aside): a row per run
            runs, start = [], 0
            for i in range(1, len(lines)):
                if lines[i][0] != lines[i - 1][0] + 1:
                    runs.append(lines[start:i])
                    start = i
            runs.append(lines[start:])
        rows = []
        for run in runs:
            blob = b"".join([line for _, line in run])
            if blob.count(b"\n") == len(run) and blob.endswith(b"\n"):
                rows.append((run[-1][0], len(run), blob))
            else:  # a line that is not one line (none we make): a row each, as they are
                rows.extend((seq, 1, line) for seq, line in run)
        db.executemany("INSERT INTO outbox(seq, n, line) VALUES (?, ?, ?)", rows)

    def readers(self, now: float | None = None) -> dict[str, int]:
        return acks.readers(self.db, self.epoch, now)

    def throughs(self) -> dict[str, int]:
        """How far each reader and every stage after it are done with our lines (delivery/through.py)."""
        return acks.throughs(self.db, self.epoch)

    def replay_from(self) -> int:
        """The seq after which outbox lines must be sent again."""
        readers = self.readers()
        if readers:
            return min(readers.values())
        return self.written  # no fc reader: only what was committed but never written

    def outbox_after(self, seq: int, limit: int = 4096) -> Iterable[tuple[int, bytes]]:
        """The outbox lines after ``seq``, with their seqs, in order; read ``limit`` seqs at a time (and the one
        row that holds ``seq`` and more), so a replay of a big outbox never holds it all in memory."""
        after = seq
        while True:
            rows = self.db.execute(
                "SELECT seq, n, line FROM outbox WHERE seq>? AND seq<=? ORDER BY seq", (seq, seq + limit)
            ).fetchall()
            if not rows:  # nothing in that window: the next row, wherever it is (seqs left out by rollbacks)
                rows = self.db.execute(
                    "SELECT seq, n, line FROM outbox WHERE seq>? ORDER BY seq LIMIT 1", (seq,)
                ).fetchall()
                if not rows:
                    return
            for last, n, line in rows:
                if n == 1:
                    yield last, line
                    continue
                first = last - n + 1
                for i, part in enumerate(line.split(b"\n")[:-1]):  # (each line ends in its newline)
                    if first + i > after:
                        yield first + i, part + b"\n"
            seq = rows[-1][0]

    def mark_written(self, db: sqlite3.Connection, seq: int, rewind: bool = False) -> None:
        """Record how far our lines count as taken by a reader that does not acknowledge; only forward, but for
        ``rewind`` (a pipe's reader that left before our end: delivery/pipe_tail.py)."""
        if seq > self.written or (rewind and seq < self.written):
            self.written = seq
            db.execute("UPDATE meta SET v=? WHERE k='written'", (seq,))

    def _retained(self, db: sqlite3.Connection, now: float) -> int:
        """The seq up to which acknowledged lines may go: those made RETAIN_ACKED seconds ago or more (when is
        known to within RETAIN_STEP, across runs: meta "made"), and those before the last FIRST_CONTACT_WINDOW
        (a new reader asks for no more)."""
        made = self._made
        if made and now < made[-1][0]:  # the clock was set back: start again, keeping everything an hour
            made.clear()
        if not made or now - made[-1][0] >= RETAIN_STEP:
            made.append((now, self.next_seq - 1))
            while len(made) > 1 and now - made[1][0] >= RETAIN_ACKED:
                made.popleft()
            db.execute(
                "INSERT INTO meta(k, v) VALUES ('made', ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                (json.dumps(list(made)),),
            )
        old = made[0][1] if now - made[0][0] >= RETAIN_ACKED else 0
        return max(old, self.next_seq - 1 - FIRST_CONTACT_WINDOW)

    def prune(self, now: float | None = None) -> tuple[int | None, int]:
        """Forget outbox lines every reader is done with (kept a while for a reader yet to come: RETAIN_ACKED);
        returns (the seq up to which File Conveyor readers are done, None when there are none; how many lines
        were dropped unacknowledged)."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            acks.forget_stale(db, self.epoch, now)
            readers = self.readers(now)
            # Without readers we cannot know whether what we wrote was taken (a reader
            # may not have read its first line yet), so the last lines are kept for a
            # reader that shows up; a restart still replays only unwritten lines then.
            floor = min([*readers.values(), self.written]) if readers else 0
            # (a row goes once its last line may: one holding lines on both sides of the floor stays whole)
            db.execute("DELETE FROM outbox WHERE seq<=?", (min(floor, self._retained(db, now)),))
            # a reader that never acknowledges must not make the file grow for ever
            cap = min(self.next_seq - 1 - (MAX_UNACKED if readers else MAX_UNCLAIMED), self.written)
            dropped = 0
            if cap > floor:
                (dropped,) = db.execute("SELECT coalesce(sum(n), 0) FROM outbox WHERE seq<=?", (cap,)).fetchone()
                db.execute("DELETE FROM outbox WHERE seq<=?", (cap,))
        return (floor if readers else None), (dropped if readers else 0)


def outbox_lines(conn: sqlite3.Connection, after: int = 0) -> int:
    """How many lines the outbox of the state file open in ``conn`` holds after seq ``after`` (a file of any
    version, opened read-only too: a row of one that has no ``n`` column is one line)."""
    if "n" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}:
        (count,) = conn.execute("SELECT count(*) FROM outbox WHERE seq>?", (after,)).fetchone()
    else:  # a row's lines are the n seqs up to its seq: min(n, seq - after) of them are after ``after``
        (count,) = conn.execute(
            "SELECT coalesce(sum(min(n, seq - ?)), 0) FROM outbox WHERE seq>?", (after, after)
        ).fetchone()
    return int(count)


def _marks(text: str) -> list[tuple[float, int]]:
    """The (time, seq) marks meta "made" holds; none when it holds anything else (a file of an older version)."""
    try:
        marks = [(float(t), int(q)) for t, q in json.loads(text)] if text else []
    except (ValueError, TypeError):
        return []
    return sorted(marks)


def hop_prefix(origin: str, epoch: str, tag: list[str] | None = None) -> bytes:
    """The bytes that turn an encoded event line into one with a hop: line[:-2] + prefix + seq + b"}}\n"."""
    return (
        b',"hop":{"from":'
        + json.dumps(origin, ensure_ascii=False).encode()
        + b',"epoch":"'
        + epoch.encode()
        + (b'","for":' + json.dumps(tag).encode() + b',"seq":' if tag else b'","seq":')
    )


def with_hop(line: bytes, prefix: bytes, seq: int) -> bytes:
    return line[:-2] + prefix + str(seq).encode() + b"}}\n"


class Holding:
    """Reader side: lines from a writer we just (re)registered with are held until the
    writer's replay for us begins (a line tagged with our session), then dropped: the
    replay brings them again, together with any line our previous process had read
    and lost, in order.  If no replay comes (the writer is not running: a file of
    saved events, a writer that exited), they are released after AWAIT_SECONDS or at
    the end of the input and taken as usual."""

    AWAIT_SECONDS = 10.0
    MAX_HELD = 100_000

    def __init__(self, session: str):
        self.session = session
        self.waiting: dict[str, float] = {}  # origin -> deadline
        self.held: dict[str, list[bytes]] = {}

    def expect(self, origin: str) -> None:
        self.waiting[origin] = time.monotonic() + self.AWAIT_SECONDS
        self.held.setdefault(origin, [])

    def cancel(self, origin: str) -> list[bytes]:
        """Nothing to wait for from ``origin`` after all: the lines held so far, to take now."""
        self.waiting.pop(origin, None)
        return self.held.pop(origin, [])

    def take(self, origin: str, hop_for: object, line: bytes) -> bool:
        """True: go on with this line; False: it is held, not for now."""
        if origin not in self.waiting:
            return True
        if isinstance(hop_for, list) and self.session in hop_for:
            del self.waiting[origin]
            self.held.pop(origin, None)  # all of it comes again in the replay
            return True
        self.held[origin].append(line)
        return False

    def release(self, at_end: bool = False) -> list[bytes]:
        """Lines to take after all: the wait timed out, the input ended, or too many are held."""
        now = time.monotonic()
        out: list[bytes] = []
        for origin in list(self.waiting):
            if at_end or self.waiting[origin] <= now or len(self.held[origin]) >= self.MAX_HELD:
                del self.waiting[origin]
                out.extend(self.held.pop(origin))
        return out


class Acknowledger:
    """Writes our high-water marks into the state files of the writers we read from, once each
    such file is shown to be the state of a writer we really read (delivery/ack_check.py)."""

    VERIFY_AGAIN = 2.0  # seconds before a writer that failed the check is looked at again
    VERIFY_STARTING = 0.2  # the same, for a writer that had just started (ack_check.writer_starting)

    def __init__(
        self,
        reader: str,
        warn: Callable[[str, str], None],
        source: ack_check.Ident | None = None,
        info: Callable[[str], None] = lambda text: None,
        vouched: bool = False,
        met: Container[str] | None = None,
    ):
        self.reader = reader
        self.session = os.urandom(8).hex()  # as secrets.token_hex(8), without hashlib
        self.warn = warn
        self.info = info
        self.source = source  # the pipe or FIFO we read, when it is one
        # the input is a stream handed over in-process by the library's caller (no file descriptor), or a regular
        # file of ours that others cannot write: its lines are ours, so the epoch decides (ack_check.py)
        self.vouched = vouched
        self._conns: dict[str, sqlite3.Connection] = {}
        self._sent: dict[str, tuple[str, int, int | None]] = {}  # origin -> epoch, mark, through
        self._last: dict[str, float] = {}
        self._verified: dict[str, str] = {}  # origin -> the epoch it was shown to have
        self._next_check: dict[str, float] = {}
        # refused because a process writing our input did not have it open: for good, so that the writer
        # leaving (a forger closing the pipe) does not let the weaker rule, the epoch alone, accept it later
        self._refused: set[tuple[str, str]] = set()
        self._starting: set[tuple[str, str]] = set()  # writers whose process had just started when looked at
        self._quiet: set[str] = set()  # writers told that we need no replay (lost_nothing)
        # the writers whose lines came in this run (Intake's; None: every writer counts as one), and writers our state
        # has from an earlier run, told at our start that we read, whose lines do not come: set aside (_verify)
        self._met = met
        self._absent: set[str] = set()
        self._started_ns = runs.reader_start()
        self._boot = runs.boot_id()

    def renew(self) -> None:
        """A new session, as a restarted reader's: writers re-send what we did not acknowledge (Intake.renew)."""
        self.session = os.urandom(8).hex()  # as secrets.token_hex(8), without hashlib
        self._quiet.clear()
        # From now on we count as a reader started now (delivery/runs.py): a pass-through between our writers and
        # us (fc-filter behind fc-tee) that died read lines of runs that began after our process did, so "the run
        # began after we did" no longer says that nothing was lost (tests/durability/test_pass_through_died_first.py)
        self._started_ns = runs.now_ns()

    def send(
        self, marks: dict[str, tuple[str, int]], force: bool = False, through: dict[str, int | None] | None = None
    ) -> set[str]:
        """Acknowledge ``marks`` and, per writer, ``through`` (delivery/through.py: None or missing, not known in
        this process: the writer's row keeps what it had); returns the writers written to just now.  A through
        that moved is written even when the mark did not."""
        now = time.monotonic()
        done = set()
        through = through or {}
        for origin, (epoch, hwm) in marks.items():
            sent = (epoch, hwm, through.get(origin))
            if self._sent.get(origin) == sent and not force:
                continue
            if not force and now - self._last.get(origin, 0.0) < ACK_INTERVAL and origin in self._sent:
                continue
            if self._write(origin, epoch, hwm, sent[2]):
                self._sent[origin] = sent
                self._last[origin] = now
                done.add(origin)
        return done

    def behind(self, marks: dict[str, tuple[str, int]]) -> bool:
        """Whether one of ``marks`` differs from what was last written to its writer."""
        return any(self._sent.get(origin, ())[:2] != mark for origin, mark in marks.items())

    def reached(self, origin: str) -> bool:
        """Whether an acknowledgement of ours got through to ``origin`` in this run."""
        return origin in self._sent

    def _write(self, origin: str, epoch: str, hwm: int, through: int | None = None) -> bool:
        if origin == self.reader or ack_check.same_file(origin, self.reader):  # "/d/./own.db" is us too
            return False
        if origin in self._absent:
            if self._met is None or origin not in self._met:
                return False
            self._absent.discard(origin)  # a line of it came: looked at again now
            self._next_check.pop(origin, None)
        unverified = self._verified.get(origin) != epoch
        paused = unverified and time.monotonic() < self._next_check.get(origin, 0.0)
        if unverified and (origin, epoch) in self._refused:
            return False
        if paused and (origin, epoch) not in self._starting:
            return False
        try:
            conn = self._conns.get(origin)
            if conn is None:
                if not os.path.exists(origin):
                    self.warn(origin, f"cannot acknowledge to {origin}: no such state file (writer on another host?)")
                    return False
                conn = ack_check.open_state(origin)
                self._conns[origin] = conn
            if unverified:
                # A writer found starting is looked at again after VERIFY_STARTING, but not later than its state
                # saying that its run writes into our pipe (one read, no scan of /proc).  Under load it opened its
                # state just after a look, wrote its lines and ended within that pause; every acknowledgement
                # until our end, the last one too, was dropped, and it kept all it wrote for a reader that had it.
                if paused and not (self.source is not None and ack_check.writes_into(conn, self.source, self._boot)):
                    return False
                verified = self._verify(conn, origin, epoch)
                if not verified:
                    again = self.VERIFY_AGAIN if verified is False else self.VERIFY_STARTING
                    self._next_check[origin] = time.monotonic() + again
                    return False
            session = "-" + self.session if origin in self._quiet else self.session
            acks.record(conn, self.reader, epoch, hwm, session, through)
            return True
        except sqlite3.DatabaseError as exc:
            self.warn(origin, f"cannot acknowledge to {origin}: {exc} (will retry)")
            conn = self._conns.pop(origin, None)
            if conn is not None:
                with contextlib.suppress(sqlite3.DatabaseError):
                    conn.close()
            return False

    def lost_nothing(self, origin: str, epoch: str, mark: int | None) -> bool:
        """Whether no process before ours can have read a line of the writer of ``epoch`` at ``origin`` that we
        have not taken (delivery/runs.py), ``mark`` being what we took of that epoch.  Then our acknowledgements
        to it say so (their session marked "-"): it re-sends nothing for us, and we hold nothing."""
        try:
            conn = self._writer_state(origin, epoch)
            if conn is None:
                return False
            run = ack_check.run_info(conn)
        except sqlite3.DatabaseError:
            return False
        if not runs.nothing_lost(run, self._started_ns, self._boot, mark):
            return False
        self._quiet.add(origin)
        return True

    def high(self, origin: str, epoch: str) -> int | None:
        """The highest seq the writer of ``epoch`` at ``origin`` has committed: a line past it is forged (taken,
        its seq would make every later real line look like a replay).  None when nothing can be told (no such
        file, another epoch, not a state file)."""
        try:
            conn = self._writer_state(origin, epoch)
            if conn is None:
                return None
            return ack_check.high_seq(conn)
        except sqlite3.DatabaseError:
            return None

    def _writer_state(self, origin: str, epoch: str) -> sqlite3.Connection | None:
        """A read-only connection to the state file of the writer of ``epoch`` at ``origin`` (kept for the next
        question), or None when there is none to ask: ourselves, no such file, or another epoch there now.
        Raises sqlite3.DatabaseError when the file cannot be read as a state file."""
        if origin == self.reader or not os.path.exists(origin):
            return None
        conn = self._conns.get(origin)
        if conn is None:
            conn = self._conns[origin] = ack_check.open_state(origin)
        return conn if ack_check.state_epoch(conn) == epoch else None

    def _verify(self, conn: sqlite3.Connection, origin: str, epoch: str) -> bool | None:
        """Whether ``origin`` is the state file of the writer of ``epoch`` that we read from (ack_check); None:
        not yet known (the writer has just started), looked at again soon."""
        found = ack_check.state_epoch(conn)
        if found is None:
            self.warn(origin, f"not acknowledging to {origin}: not a File Conveyor state file (a forged hop?)")
            return False
        if found != epoch:  # the writer's state was made anew since (or the hop is forged): nothing to tell it
            self.info(f"not acknowledging to {origin}: its epoch is not the one our events came with")
            return False
        if self.source is None and not self.vouched:
            # a file of saved events others may write (or a terminal): no writer to ask, and its lines, epochs
            # included, may be anyone's; a replayed file needs no acknowledgement anyway
            self._refused.add((origin, epoch))
            self.info(f"not acknowledging to {origin}: our input is neither a pipe nor a file only we can write")
            return False
        if self.source is not None and ack_check.writes_into(conn, self.source, self._boot):
            # its run said it writes into our pipe (runs.current), whether it still does or ended before we
            # looked: a cron `fc-watch --scan-once | fc-filter` of a small tree, which used to be refused
            self._verified[origin] = epoch
            return True
        # None: nobody writes our pipe any more (a cron `fc-watch --scan-once | awk | fc-filter` whose writer
        # ended before we read): the epoch decides, or such a pipeline would never be acknowledged
        held = ack_check.writer_holds(self.source, origin) if self.source is not None else None
        if held is not True and self.source is not None and ack_check.writes_into(conn, self.source, self._boot):
            # read again after the scan: a writer says where its lines went on before it lets go of its state
            # (runs.ending), so one the scan found at its end without the file, or behind a pass-through at its
            # end (tee, its input closed at EOF), has said so by now; refused, it re-sent everything next run
            self._verified[origin] = epoch
            return True
        if held is None and (origin, epoch) in self._starting:
            # a writer we waited for left without ever showing the file open: its word is not taken now
            held = False
        if held is False:
            if ack_check.writer_starting(self.source):  # type: ignore[arg-type]
                # a pipeline restarted as a whole: the writer may not have opened its state yet (ack_check); it
                # must show it open later, while it writes (a young forger that leaves is not let in)
                self._starting.add((origin, epoch))
                self.info(f"not acknowledging to {origin} yet: the process writing our input has just started")
                return None
            if self._met is not None and origin not in self._met:
                # No line of it came in this run: our state has it from an earlier one, and it was told at our
                # start that we read (fc-watch --state a.db one day, --state b.db the next, into our state).
                # Nothing is forged; refused for the run as a forgery, it warned of one, and a writer that came
                # back into our FIFO got no acknowledgement until our next run.
                self._absent.add(origin)
                self.info(f"{origin} {ABSENT}: not acknowledging to it until a line of it comes")
                return False
            self._refused.add((origin, epoch))
            self.warn(
                origin,
                f"not acknowledging to {origin}: no process writing our input has it open (a forged hop?)",
            )
            return False
        self._verified[origin] = epoch
        return True

    def close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.close()
        self._conns.clear()
