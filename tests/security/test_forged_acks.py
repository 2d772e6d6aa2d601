"""Finding 7 of issue 16: a line with a forged ``hop.from`` made a stage write acknowledgement rows into another
pipeline's state file (which suppresses that pipeline's replays).  A stage now acknowledges only into a File
Conveyor state file whose epoch is the hop's, and, while a process writes its input pipe, only if that process
(or one it reads from, like fc-tee) has the file open (delivery/ack_check.py, docs/durability.md)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.runner import Done, Item, Options, Runner, Stage
from fileconveyor.report import Reporter
from fileconveyor.stopping import Stopper
from tests.conftest import RELAY, ROOT, held_for
from tests.security.stage_runs import env

FILTER = [sys.executable, str(RELAY)]
WATCH = [sys.executable, str(ROOT / "bin" / "fc-watch")]


def _event(rel: str, hop: dict | None = None) -> bytes:
    ev: dict = {"v": 1, "kind": "created", "root": "/r", "path": f"/r/{rel}", "rel": rel}
    if hop is not None:
        ev["hop"] = hop
    return (json.dumps(ev) + "\n").encode()


def _other_pipeline(tmp_path: Path) -> tuple[Path, str]:
    """Another pipeline's real stage state file, with a reader's acknowledgement in it; and its epoch."""
    other = tmp_path / "other.db"
    p = subprocess.run([*FILTER, "--state", str(other)], input=_event("a.css"), capture_output=True, env=env(tmp_path))
    assert p.returncode == 0, p.stderr
    with sqlite3.connect(other) as db:
        (epoch,) = db.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()
        db.execute(
            "INSERT INTO acks(reader, epoch, seq, at, session) VALUES ('/its/reader.db', ?, 1, 1.0, 's')", (epoch,)
        )
    db.close()
    return other, epoch


def _acks(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM acks ORDER BY reader").fetchall()
    finally:
        db.close()


def _read_from_forger(tmp_path: Path, forged: Path, lines: int, pass_fds: tuple[int, ...] = ()) -> bytes:
    """A stage's stderr after reading the ``lines`` of ``forged`` from a forger that still holds the pipe while
    they are taken (and judged), and then leaves: the epoch alone must not let it in then.  ``pass_fds``: what
    else the forger holds."""
    forger = subprocess.Popen(
        ["sh", "-c", 'cat "$1"; exec sleep 4', "sh", str(forged)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        pass_fds=pass_fds,
    )
    reader = subprocess.Popen(
        [*held_for(1.0, "relay"), "--state", str(tmp_path / "ours.db")],
        stdin=forger.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(tmp_path),
    )
    assert forger.stdout is not None
    forger.stdout.close()  # (the reader has it)
    assert reader.stdout is not None
    for _ in range(lines):
        assert reader.stdout.readline()
    forger.wait(timeout=30)  # past the time a refused writer is looked at again (2 s)
    _out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err.decode()
    return err


def _not_acknowledged(err: bytes, origin: Path) -> bool:
    """Whether a stage said it acknowledges nothing to the writer at ``origin``: refused at a look while the forger
    still wrote, or, when that forger was young at every look while it wrote ("just started") and the stage ended
    before looking again after it left (a loaded machine), its line taken without a replay."""
    shown = str(origin).encode()
    refused = b"not acknowledging to " + shown + b": no process writing our input has it open"
    return refused in err or b"taking 1 line(s) of " + shown + b" without its replay" in err


def test_a_forged_hop_writes_nothing_into_another_pipelines_state_file(tmp_path: Path) -> None:
    other, epoch = _other_pipeline(tmp_path)
    before = _acks(other)
    foreign = tmp_path / "foreign.db"  # any SQLite file with a table of that name
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE acks(reader TEXT PRIMARY KEY, epoch TEXT, seq INTEGER, at REAL, session TEXT)")
    db.close()
    # the writer of our pipe stays there (the forger): the forged line must not pass for one of its own lines.  No
    # acknowledgement reaches a writer, so the lines are held for a replay that never comes: 1 s, not 10.
    # The forger is a process of its own, reading no pipe: not this test process, whose pipes (pytest-xdist's
    # controller, the other worker and what it runs) the check follows as it follows fc-tee's, and where another
    # process may hold anything.
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(
        _event("x.css", {"from": str(other), "epoch": epoch, "seq": 1})  # the epoch right, a seq the writer wrote
        + _event("z.css", {"from": str(foreign), "epoch": "0000", "seq": 10**9})
    )
    err = _read_from_forger(tmp_path, forged, lines=2)
    assert _acks(other) == before
    assert _acks(foreign) == []
    assert _not_acknowledged(err, other), err


def test_a_forged_hop_from_a_pipe_whose_writer_left_still_needs_the_epoch(tmp_path: Path) -> None:
    """With no writer left to ask (a pipe closed), the epoch alone decides (a file of saved events: nothing is
    acknowledged, test_acks_unverified.py)."""
    other, _epoch = _other_pipeline(tmp_path)
    before = _acks(other)
    forged = _event("x.css", {"from": str(other), "epoch": "0123456789abcdef", "seq": 10**9})
    p = subprocess.run(
        [*FILTER, "--state", str(tmp_path / "ours.db")], input=forged, capture_output=True, env=env(tmp_path)
    )
    assert p.returncode == 0, p.stderr
    assert _acks(other) == before


def test_a_real_writer_is_acknowledged_through_a_live_pipe(tmp_path: Path) -> None:
    """fc-watch | fc-filter, both running: fc-filter's acknowledgement lands in fc-watch's state file."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.css").write_text("a")
    wstate, fstate = tmp_path / "w.db", tmp_path / "f.db"
    watch = subprocess.Popen(
        [*WATCH, "--state", str(wstate), str(site)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    filt = subprocess.Popen(
        [*FILTER, "--state", str(fstate)], stdin=watch.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert watch.stdout is not None
    watch.stdout.close()  # only fc-watch writes into fc-filter's stdin
    try:
        deadline = time.monotonic() + 30
        rows: list[tuple] = []
        while time.monotonic() < deadline and not (rows and rows[0][2] >= 1):  # first 0 (registered), then 1
            time.sleep(0.3)
            if wstate.exists():
                with contextlib.suppress(sqlite3.OperationalError):  # fc-watch still making its tables
                    rows = [r for r in _acks(wstate) if r[0] == str(fstate)]
        assert rows and rows[0][2] >= 1, rows
    finally:
        watch.terminate()
        watch.wait(timeout=30)
        _, err = filt.communicate(timeout=60)
    assert b"not acknowledging" not in err, err


def test_a_writer_that_ended_behind_a_young_pass_through_is_still_acknowledged(tmp_path: Path) -> None:
    """A cron `fc-watch --scan-once | fc-filter` of a small tree: fc-filter first looked while the process
    writing its pipe was young and had no state file open (a pipeline starting), then that process ended
    without ever showing it.  fc-filter refused fc-watch for the run ("a forged hop?"), so fc-watch kept
    re-sending.  fc-watch's state now says which pipe its run writes into, and that pipe is ours."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.css").write_text("a")
    wstate, fstate = tmp_path / "w.db", tmp_path / "f.db"
    r, w = os.pipe()
    try:
        # fc-watch alone would wait 30 s for a reader to acknowledge: it goes (killed) once its line is written
        watch = subprocess.Popen([*WATCH, "--scan-once", "--state", str(wstate), str(site)], stdout=w)
        assert select.select([r], [], [], 60)[0], "fc-watch wrote nothing"
        time.sleep(0.2)
        watch.kill()
        watch.wait(timeout=30)
        # the line waits in the pipe; its one writer left is young (writer_starting) and has no state file open
        young = subprocess.Popen(["sleep", "1.5"], stdout=w)
        os.close(w)
        w = -1
        filt = subprocess.run(
            [*held_for(1, "relay"), "--state", str(fstate)],
            stdin=r,
            capture_output=True,
            env=env(tmp_path),
            timeout=60,
        )
        young.wait(timeout=30)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert filt.returncode == 0, filt.stderr
    assert b"not acknowledging" not in filt.stderr, filt.stderr
    assert [(row[0], row[2]) for row in _acks(wstate)] == [(str(fstate), 1)]


class _Pass(Stage):
    name = "fc-pass"

    def work(self, item: Item) -> Done:
        return Done([{k: v for k, v in item.event.items() if k != "hop"}])


def _stage_run(state: Path, data: bytes) -> tuple[int, list[dict], str]:
    out, err = io.BytesIO(), io.StringIO()
    runner = Runner(_Pass(), Options(state_path=state), io.BytesIO(data), out, Reporter("fc-t", err, 0), Stopper())
    status = runner.run()
    return status, [E.decode(x) for x in out.getvalue().splitlines()], err.getvalue()


def test_a_forged_seq_past_what_the_writer_wrote_does_not_hide_its_later_lines(tmp_path: Path) -> None:
    """A line that claims to come from our real writer (its state file, its epoch) with a seq far ahead: taken,
    every real line after it looked like a replay and was dropped (and acknowledged: the writer forgot them)."""
    writer = tmp_path / "writer.db"
    first = _stage_run(writer, _event("a.css") + _event("b.css"))[1]
    later = _stage_run(writer, _event("c.css"))[1]
    hop = dict(first[0]["hop"], seq=2**62)
    forged = {"v": 1, "kind": "deleted", "root": "/r", "path": "/r/z.css", "rel": "z.css", "hop": hop}
    data = b"".join(E.encode(e) for e in [first[0], forged, first[1], *later])
    status, out, err = _stage_run(tmp_path / "reader.db", data)
    assert [e["rel"] for e in out] == ["a.css", "b.css", "c.css"], err
    assert status == 1 and f"input line 2: hop.seq {2**62} is past the last line {writer} wrote (3)" in err
    assert max(r[2] for r in _acks(writer)) == 3  # what the reader acknowledged: the real lines, no more


def test_an_acknowledgement_costs_the_writer_no_fsync(tmp_path: Path) -> None:
    """The connection a reader writes acknowledgements with commits as the writer's own does (WAL, NORMAL):
    with SQLite's default (FULL) every acknowledgement was an fdatasync of the writer's WAL in the reader's main
    loop, with the writer's lock held meanwhile (issue 18: live latency)."""
    from fileconveyor.delivery import ack_check
    from fileconveyor.delivery.durable import StageState

    writer = StageState(tmp_path / "w.db")
    conn = ack_check.open_state(str(tmp_path / "w.db"))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: no fsync at commit in WAL mode
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # the writer checkpoints, not us
    finally:
        conn.close()
        writer.close()


def _writer_into(tmp_path: Path, out: int) -> tuple[Path, str]:
    """Another pipeline's stage, run once with its lines going into ``out`` (its state's run_out names that pipe
    or FIFO), ended: its state file and epoch."""
    other = tmp_path / "other.db"
    p = subprocess.run(
        [*FILTER, "--state", str(other), "--drain-timeout", "0.2"],
        input=_event("a.css"),
        stdout=out,
        stderr=subprocess.PIPE,
        env=env(tmp_path),
    )
    assert p.returncode in (0, 4), p.stderr  # 4: its line unacknowledged (nobody reads yet), kept for next run
    with sqlite3.connect(other) as db:
        (epoch,) = db.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()
    db.close()
    return other, epoch


def _forge_into(tmp_path: Path, r: int, w: int, other: Path, epoch: str) -> bytes:
    """The writer's own line taken out of the pipe, then a forged one naming its state written by us, the pipe then
    held by a forger process that does not hold that state file open (and reads no pipe: not this test process,
    whose pipes, to pytest-xdist's controller and the other worker, the check follows as it follows fc-tee's)
    while fc-filter reads; fc-filter's stderr."""
    assert os.read(r, 65536).count(b"\n") == 1  # the real line, read by someone else
    os.write(w, _event("x.css", {"from": str(other), "epoch": epoch, "seq": 1}))
    forger = subprocess.Popen(["sleep", "60"], pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    os.close(w)
    reader = subprocess.Popen(
        [*held_for(1, "relay"), "--state", str(tmp_path / "ours.db")],
        stdin=r,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(tmp_path),
    )
    os.close(r)
    assert reader.stdout is not None
    assert reader.stdout.readline()  # taken (and judged) while the forger still holds the pipe
    forger.kill()
    forger.wait()
    _out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err.decode()
    return err


def test_a_fifo_others_may_write_gets_no_acknowledgement_for_a_writer_that_wrote_there(tmp_path: Path) -> None:
    """A writer's state says its run wrote into a FIFO (run_out), and it ended.  Anyone may open that FIFO
    (mode 0666): a line written there naming the writer's state, its epoch right, was acknowledged into that
    state (the writer then forgets lines its reader never had).  A FIFO another user may write is now as a file
    of saved events others may write: nothing is acknowledged."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o666)
    w = os.open(fifo, os.O_RDWR)  # the other user, holding the FIFO open
    r = os.open(fifo, os.O_RDONLY)
    other, epoch = _writer_into(tmp_path, w)
    err = _forge_into(tmp_path, r, w, other, epoch)
    assert _acks(other) == [], err.decode()
    assert b"is a FIFO other users may write into" in err, err


def test_a_run_out_written_on_another_boot_does_not_vouch_for_our_pipe(tmp_path: Path) -> None:
    """Pipe inode numbers start again at every boot: a state whose last run, before a reboot, wrote into a pipe
    of the number ours has now (here: the very pipe, its run_boot another boot's) proves nothing about the lines
    in our pipe.  The process writing it is asked, as before run_out: it does not hold that state open."""
    r, w = os.pipe()
    other, epoch = _writer_into(tmp_path, w)
    with sqlite3.connect(other) as db:
        db.execute("UPDATE meta SET v='00000000-0000-0000-0000-000000000000' WHERE k='run_boot'")
    db.close()
    err = _forge_into(tmp_path, r, w, other, epoch)
    assert _acks(other) == [], err.decode()
    assert b"no process writing our input has it open (a forged hop?)" in err, err


def test_which_fifos_other_users_may_write(tmp_path: Path) -> None:
    """ack_check.others_may_write on real FIFOs: ours and owner-only, or writable by our user-private group
    (umask 002) only, are ours; world-writable, another group's, or another user's are not; a pipe is ours."""
    from fileconveyor.delivery import ack_check

    fifo = tmp_path / "f.fifo"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o600)
    assert not ack_check.others_may_write(path=str(fifo))
    os.chmod(fifo, 0o602)
    assert ack_check.others_may_write(path=str(fifo))
    r, w = os.pipe()
    try:
        assert not ack_check.others_may_write(fd=r)
    finally:
        os.close(r)
        os.close(w)
    if os.geteuid() != 0:
        return  # chown to another user or group needs root
    os.chmod(fifo, 0o660)
    assert not ack_check.others_may_write(path=str(fifo))  # root's group, no other member
    os.chown(fifo, 0, 65534)
    assert ack_check.others_may_write(path=str(fifo))
    os.chown(fifo, 65534, 0)
    os.chmod(fifo, 0o600)
    assert ack_check.others_may_write(path=str(fifo))


def test_a_writers_run_next_vouches_only_for_the_pipes_its_readers_wrote_into(tmp_path: Path) -> None:
    """A writer says as it ends which pipes the processes reading it write into (run_next): a reader of one of
    those knows it as its own after it ended.  A young process in another pipe, holding no state file, that
    leaves after the reader looked is still refused, and run_next from another boot vouches for nothing."""
    from fileconveyor.delivery import ack_check, runs
    from fileconveyor.delivery.durable import Acknowledger, StageState

    w_r, w_w = os.pipe()  # the writer's output, read by a pass-through into `next_`
    n_r, n_w = os.pipe()
    r, w = os.pipe()  # our input: the forger's
    passing = subprocess.Popen(["cat"], stdin=w_r, stdout=n_w)
    forger = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=w)
    for fd in (w_r, n_w, w):
        os.close(fd)
    try:
        origin = tmp_path / "w.db"
        state = StageState(origin, out=ack_check.input_ident(w_w))
        epoch = state.epoch
        state.close()
        conn = ack_check.open_state(str(origin))
        next_ = ack_check.input_ident(n_r)
        assert next_ is not None and ack_check.writes_into(conn, next_, runs.boot_id())
        assert not ack_check.writes_into(conn, next_, "00000000-0000-0000-0000-000000000000")
        conn.close()
        warned: list[str] = []
        reader = Acknowledger(str(tmp_path / "r.db"), lambda key, text: warned.append(text), ack_check.input_ident(r))
        reader.VERIFY_STARTING = 0.0
        assert reader.send({str(origin): (epoch, 1)}, force=True) == set()  # young: looked at again
        forger.kill()
        forger.wait(timeout=30)
        assert reader.send({str(origin): (epoch, 1)}, force=True) == set()  # it left without showing the file
        reader.close()
        assert _acks(origin) == []
        assert any("no process writing our input has it open" in text for text in warned), warned
    finally:
        for proc in (forger, passing):
            proc.kill()
            proc.wait(timeout=30)
        for fd in (w_w, n_r, r):
            os.close(fd)


def test_a_forger_is_not_vouched_for_by_a_state_file_holder_at_the_end_of_a_pipe_it_holds(tmp_path: Path) -> None:
    # The check followed every pipe a writer of our input had open for reading, on any descriptor, as if its
    # lines came through it (fc-tee).  A forger holding the read end of some pipe whose writer has the state file
    # open (a supervisor's or a test runner's channel to its children: pytest-xdist's led to the other worker)
    # passed for that writer's pass-through, and its forged hop was acknowledged.  A pass-through takes its lines
    # from its stdin or a named FIFO: a pipe held on another descriptor vouches for nothing.
    other, epoch = _other_pipeline(tmp_path)
    before = _acks(other)
    channel_r, channel_w = os.pipe()
    held = os.open(other, os.O_RDONLY)
    holder = subprocess.Popen(["sleep", "30"], pass_fds=(held, channel_w), stdin=subprocess.DEVNULL)
    os.close(held)
    os.close(channel_w)
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(_event("x.css", {"from": str(other), "epoch": epoch, "seq": 1}))
    try:
        err = _read_from_forger(tmp_path, forged, lines=1, pass_fds=(channel_r,))
    finally:
        os.close(channel_r)
        holder.kill()
        holder.wait()
    assert _acks(other) == before
    assert _not_acknowledged(err, other), err
