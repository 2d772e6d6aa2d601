"""fc-filter passes lines through and keeps no state: killed -9 mid-stream it loses no line, because the stage
after it acknowledges straight to fc-watch, and fc-watch re-sends what was not acknowledged (docs/durability.md,
"Pass-through stages").

- Named FIFOs, fc-filter killed again and again and restarted (supervisord, fc-conveyor): fc-watch re-sends to
  the next reader of its FIFO; fc-transport, whose input FIFO's writer went, asks fc-watch for what it lacks
  (a new session) and holds fc-watch's lines until that replay.
- An anonymous pipe (cron): the killed run ends early (fc-watch exit 141); the next run of the same pipeline
  re-sends what fc-transport had not acknowledged.

Both end with every matching file at the destination and in the record database, and nothing else."""

from __future__ import annotations

import array
import fcntl
import os
import random
import signal
import sqlite3
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.conftest import ROOT

BIN = ROOT / "bin"
N = 1200  # files made while fc-filter is killed at random; a third of them pass (css)
STALLED = 900  # files made while fc-transport is stopped: more than the pipes hold


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(BIN / cmd), *args], **kw)  # type: ignore[call-overload]


def make(site: Path, i: int, pad: str = "") -> None:
    ext = ("css", "txt", "js")[i % 3]
    d = site / f"d{i % 7}{pad}"
    d.mkdir(exist_ok=True)
    (d / f"file {i:05d}.{ext}").write_text(f"content {i}\n")


def wanted(site: Path) -> dict[str, str]:
    """What must arrive: every css file under the site, with its content."""
    return {str(p.relative_to(site)): p.read_text() for p in site.rglob("*.css")}


def arrived(dest: Path) -> dict[str, str]:
    if not dest.exists():
        return {}
    out = {}
    for p in dest.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            try:
                out[str(p.relative_to(dest))] = p.read_text()
            except FileNotFoundError:  # a temporary file renamed meanwhile
                continue
    return out


def recorded(db: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {Path(row[0]).name for row in conn.execute("SELECT input_file FROM synced_files")}
    except sqlite3.OperationalError:  # not made yet
        return set()
    finally:
        conn.close()


def last_batch(db: Path) -> int:
    """fc-watch's last seq given (0: none yet)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name='last_batch'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_for(what, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return what()


def check(site: Path, dest: Path, db: Path) -> None:
    want = wanted(site)
    got = arrived(dest)
    lost = sorted(set(want) - set(got))
    assert not lost, f"lost {len(lost)}: {lost[:5]}"
    assert {r: got[r] for r in want} == want  # the right content
    extra = sorted(set(got) - set(want))
    assert not extra, f"not css, yet sent: {extra[:5]}"
    names = {Path(r).name for r in want}
    assert recorded(db) == names, f"record: missing {sorted(names - recorded(db))[:5]}"


def test_fc_filter_killed_again_and_again_between_fifos_loses_nothing(tmp_path: Path) -> None:
    site, dest, st = tmp_path / "site", tmp_path / "dest", tmp_path / "state"
    site.mkdir()
    st.mkdir()
    w_fifo, f_fifo = tmp_path / "watch.fifo", tmp_path / "filter.fifo"
    for f in (w_fifo, f_fifo):
        os.mkfifo(f, 0o600)
    db = tmp_path / "synced.db"
    env = {**os.environ, "FC_STATE_DIR": str(st)}
    ferr = (tmp_path / "filter.err").open("ab")

    def start_filter() -> subprocess.Popen[bytes]:
        return fc("fc-filter", "--extensions", "css", "--input", str(w_fifo), "--output", str(f_fifo),
                  stderr=ferr, env=env)  # fmt: skip

    procs: dict[str, subprocess.Popen[bytes]] = {}
    rng = random.Random(7)
    kills = 0
    try:
        procs["watch"] = fc("fc-watch", "--state", str(st / "watch.db"), "--output", str(w_fifo), str(site),
                            stderr=(tmp_path / "watch.err").open("wb"), env=env)  # fmt: skip
        procs["filter"] = start_filter()
        procs["transport"] = fc("fc-transport", "--input", str(f_fifo), "--to", f"file://{dest}",
                                "--state", str(st / "transport.db"), stdout=subprocess.PIPE,
                                stderr=(tmp_path / "transport.err").open("wb"), env=env)  # fmt: skip
        procs["record"] = fc("fc-record", "--db", str(db), "--state", str(st / "record.db"),
                             stdin=procs["transport"].stdout, stdout=subprocess.DEVNULL,
                             stderr=(tmp_path / "record.err").open("wb"), env=env)  # fmt: skip
        procs["transport"].stdout.close()  # type: ignore[union-attr]
        make(site, N)  # a css file (N % 3 == 0)
        assert wait_for(lambda: len(arrived(dest)) == 1, 60), (tmp_path / "transport.err").read_text()
        # fc-filter killed holding lines: fc-transport stopped, so fc-filter blocks writing a batch into its full
        # FIFO with more in its input pipe, and fc-watch waits on its own write
        procs["transport"].send_signal(signal.SIGSTOP)
        for i in range(N + 1, N + 1 + STALLED):
            make(site, i)
        watch_db = st / "watch.db"
        # more than fc-transport's FIFO and fc-filter's input hold: fc-filter has read lines it cannot write
        assert wait_for(lambda: last_batch(watch_db) >= STALLED // 3, 120), (
            last_batch(watch_db),
            (tmp_path / "watch.err").read_text()[-2000:],
            (tmp_path / "filter.err").read_bytes()[-2000:],
        )
        time.sleep(1.5)
        procs["filter"].send_signal(signal.SIGKILL)
        procs["filter"].wait()
        procs["transport"].send_signal(signal.SIGCONT)
        procs["filter"] = start_filter()
        for start in range(0, N, 60):
            for i in range(start, min(N, start + 60)):
                make(site, i)
            time.sleep(rng.uniform(0.05, 0.3))
            if rng.random() < 0.5:
                procs["filter"].send_signal(signal.SIGKILL)
                procs["filter"].wait()
                kills += 1
                time.sleep(rng.uniform(0.0, 0.5))
                procs["filter"] = start_filter()
        assert kills >= 3
        assert not (st / "filter.db").exists() and not list(st.glob("filter-*"))  # no state of its own
        wait_for(lambda: set(wanted(site)) <= set(arrived(dest)) and len(recorded(db)) >= len(wanted(site)), 180)
        check(site, dest, db)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()


def count_arrived(dest: Path) -> int:
    """Files at the destination, cheaply (polled every 10 ms)."""
    if not dest.exists():
        return 0
    return sum(1 for _, _, files in os.walk(dest) for f in files if not f.startswith("."))


def unread(pid: int) -> int:
    """Bytes unread in the pipe on ``pid``'s stdin (Linux FIONREAD)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
        return buf[0]
    finally:
        os.close(fd)


def writer_blocked(pid: int) -> bool:
    """The pipe on ``pid``'s stdin (its reader stopped) is as full as its writer can make it: more than half its
    size, and not a byte more 0.3 s later.  (Not "size minus a line": the kernel stores a pipe's bytes in page
    slots, and a writer blocks with a few KiB free, 510,018 of 524,288 here.)"""
    before = unread(pid)
    time.sleep(0.3)
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(fd)
    return before > size // 2 and unread(pid) == before


def run_pipeline(site: Path, dest: Path, db: Path, env: dict[str, str], kill_at: int | None) -> list[int | None]:
    """``fc-watch --scan-once | fc-filter | fc-transport | fc-record``; with ``kill_at``: fc-filter killed -9 once
    that many files have arrived, while it is blocked writing lines fc-transport has not read (fc-transport is
    stopped meanwhile, so the kill comes mid-stream however fast the run is).  The exit statuses."""
    watch = fc("fc-watch", "--scan-once", str(site), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    filt = fc("fc-filter", "--extensions", "css", stdin=watch.stdout, stdout=subprocess.PIPE,
              stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    transport = fc("fc-transport", "--to", f"file://{dest}", stdin=filt.stdout, stdout=subprocess.PIPE,
                   stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    record = fc("fc-record", "--db", str(db), stdin=transport.stdout, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    for p in (watch, filt, transport):
        p.stdout.close()  # type: ignore[union-attr]
    procs = [watch, filt, transport, record]
    try:
        if kill_at is not None:
            deadline = time.monotonic() + 60
            while count_arrived(dest) < kill_at and transport.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            transport.send_signal(signal.SIGSTOP)
            assert filt.poll() is None, "fc-filter ended before the kill: make more files"
            assert wait_for(lambda: writer_blocked(transport.pid), 60), "fc-filter's output never filled up"
            filt.send_signal(signal.SIGKILL)
            filt.wait()
            transport.send_signal(signal.SIGCONT)
        for p in procs:
            p.wait(timeout=180)
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
    return [p.returncode for p in procs]


def test_fc_filter_killed_in_a_pipe_costs_a_rerun_not_a_file(tmp_path: Path) -> None:
    site, dest, db = tmp_path / "site", tmp_path / "dest", tmp_path / "synced.db"
    site.mkdir()
    n = 6000
    for i in range(n):
        make(site, i, pad="-" + "x" * 200)  # ~750-byte lines: the 2,000 css lines are 3 times what a pipe holds
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    first = run_pipeline(site, dest, db, env, kill_at=20)
    assert first[1] == -signal.SIGKILL, first
    assert 20 <= len(arrived(dest)) < len(wanted(site)), "the kill came too late to test anything"
    second = run_pipeline(site, dest, db, env, kill_at=None)
    assert second == [0, 0, 0, 0], second
    check(site, dest, db)
    assert not list((tmp_path / "state").glob("filter-*"))  # fc-filter kept no state
    # fc-transport acknowledged straight to fc-watch, through fc-filter (the hop passed on as it came)
    (watch_db,) = (tmp_path / "state").glob("watch-*.db")
    conn = sqlite3.connect(f"file:{watch_db}?mode=ro", uri=True)
    try:
        readers = [Path(r).name for (r,) in conn.execute("SELECT reader FROM acks")]
    finally:
        conn.close()
    assert [r.split("-")[0] for r in readers] == ["transport"], readers
