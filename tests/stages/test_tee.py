"""fc-tee: one event stream to several outputs, and no loss when a branch's reader,
or fc-tee itself, is killed and restarted (its readers acknowledge to fc-watch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import RELAY, ROOT

BIN = ROOT / "bin"


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    command = RELAY if cmd == "fc-relay" else BIN / cmd  # fc-relay: a durable stage (tests/relay.py)
    return subprocess.Popen([sys.executable, str(command), *args], **kw)  # type: ignore[call-overload]


def reader(path: Path):
    """A FIFO's read end, opened without waiting for a writer, then blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def both_branches_get(want: set[str], rels: Callable[[str], set[str]], timeout: float) -> None:
    """Wait until branches a and b each have every name in ``want`` (``rels``: the names a branch has)."""
    deadline = time.monotonic() + timeout
    while (rels("a") != want or rels("b") != want) and time.monotonic() < deadline:
        time.sleep(0.2)
    for k in ("a", "b"):
        assert want - rels(k) == set(), f"branch {k} lost {len(want - rels(k))} of {len(want)}"


def readline(r) -> bytes:
    """A line from a FIFO; before its writer opens it, reads give b"" (end of file): retry."""
    deadline = time.monotonic() + 10
    while True:
        got = r.readline()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_copies_every_line_unchanged_to_fifos_files_and_stdout(tmp_path: Path) -> None:
    a = tmp_path / "a.fifo"
    os.mkfifo(a)
    reader = subprocess.Popen(["cat", str(a)], stdout=subprocess.PIPE)
    lines = [
        json.dumps({"v": 1, "kind": "created", "rel": f"f{i}", "x-own": "é", "hop": {"seq": i}}) + "\n"
        for i in range(500)
    ]
    data = "".join(lines).encode()
    out = subprocess.run(
        [
            sys.executable,
            str(BIN / "fc-tee"),
            "--output",
            str(a),
            "--output",
            str(tmp_path / "b.jsonl"),
            "--output",
            "-",
        ],
        input=data,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == data
    assert (tmp_path / "b.jsonl").read_bytes() == data
    # a named FIFO's reader is first told that a new fc-tee writes to it (a File Conveyor reader asks its writers
    # for what it lacks: it may not have seen the previous one's end); a file or stdout is not
    assert reader.communicate(timeout=10)[0] == b'{"v":1,"kind":"resend"}\n' + data


def test_a_fifo_given_as_stdout_gets_the_resend_line_too(tmp_path: Path) -> None:
    """`fc-tee > x.fifo` (a supervisord chain's command): its stdout is a named FIFO, whose reader may not see its
    input end when fc-tee is replaced; it is told first, as a FIFO given with --output is (a pipe is not: above)."""
    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(r, True)
    w = os.open(fifo, os.O_WRONLY)
    try:
        tee = subprocess.run(
            [sys.executable, str(BIN / "fc-tee"), "--output", "-"], input=b'{"n":1}\n', stdout=w, timeout=30
        )
        os.close(w)
        w = -1
        assert tee.returncode == 0
        with os.fdopen(r, "rb") as got:
            r = -1
            assert got.read() == b'{"v":1,"kind":"resend"}\n{"n":1}\n'
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


def test_a_gone_reader_is_skipped_and_a_new_one_is_written_to(tmp_path: Path) -> None:
    a, b = tmp_path / "a.fifo", tmp_path / "b.fifo"
    os.mkfifo(a)
    os.mkfifo(b)
    ra, rb = reader(a), reader(b)
    tee = fc(
        "fc-tee", "--input", "-", "--output", str(a), "--output", str(b), stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert tee.stdin is not None
    tee.stdin.write(b'{"n":1}\n')
    tee.stdin.flush()
    assert readline(ra) == readline(rb) == b'{"v":1,"kind":"resend"}\n'  # fc-tee started (events.RESEND)
    assert readline(ra) == b'{"n":1}\n' and readline(rb) == b'{"n":1}\n'
    rb.close()  # b's reader goes away
    for n in range(2, 50):
        tee.stdin.write(b'{"n":%d}\n' % n)
        tee.stdin.flush()
        assert ra.readline() == b'{"n":%d}\n' % n  # a keeps getting every line: fc-tee neither blocks nor dies
    time.sleep(0.6)  # fc-tee retries a gone output every 0.5 s
    rb = reader(b)  # a new reader
    deadline = time.monotonic() + 10
    got = b""
    n = 50
    while b'"n":' not in got and time.monotonic() < deadline:
        tee.stdin.write(b'{"n":%d}\n' % n)
        tee.stdin.flush()
        assert ra.readline() == b'{"n":%d}\n' % n
        os.set_blocking(rb.fileno(), False)
        got = rb.read() or b""
        os.set_blocking(rb.fileno(), True)
        n += 1
        time.sleep(0.2)
    assert got.startswith(b'{"n":') and got.endswith(b"}\n"), got  # whole lines again, no torn one
    tee.stdin.close()
    assert tee.wait(timeout=10) == 0
    err = tee.stderr.read().decode()  # type: ignore[union-attr]
    assert "the reader went away" in err and "a reader is back" in err, err
    ra.close()
    rb.close()


def test_no_loss_when_a_branch_reader_and_fc_tee_are_killed(tmp_path: Path) -> None:
    """fc-watch -> FIFO -> fc-tee -> two FIFOs -> fc-relay each, appending to a file.
    Kill -9 branch A's fc-relay, then fc-tee, in the middle; restart them: both
    branches end with every file (duplicates allowed)."""
    site = tmp_path / "site"
    site.mkdir()
    n = 3000
    for i in range(n):
        (site / f"f{i:05d}.txt").write_text(str(i))
    fifo = {k: tmp_path / f"{k}.fifo" for k in ("watch", "a", "b")}
    for f in fifo.values():
        os.mkfifo(f)
    st = tmp_path / "state"
    st.mkdir()
    out = {k: tmp_path / f"{k}.jsonl" for k in ("a", "b")}

    def branch(k: str) -> subprocess.Popen[bytes]:
        return fc(
            "fc-relay", "--min-size", "0", "--input", str(fifo[k]), "--output", str(out[k]),
            "--state", str(st / f"filter-{k}.db"), stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def tee() -> subprocess.Popen[bytes]:
        return fc("fc-tee", "--input", str(fifo["watch"]), "--output", str(fifo["a"]), "--output", str(fifo["b"]),
                  stderr=subprocess.DEVNULL)  # fmt: skip

    procs = {"a": branch("a"), "b": branch("b")}
    procs["tee"] = tee()
    procs["watch"] = fc(
        "fc-watch",
        "--state",
        str(st / "watch.db"),
        "--output",
        str(fifo["watch"]),
        str(site),
        stderr=subprocess.DEVNULL,
    )

    def rels(k: str) -> set[str]:
        if not out[k].exists():
            return set()
        return {json.loads(line)["rel"] for line in out[k].read_text().splitlines() if line.endswith("}")}

    try:
        deadline = time.monotonic() + 30
        while len(rels("a")) < n // 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait()
        # killed in the middle of the stream, or (a quick machine) just after its end: a restart either way
        assert n // 10 <= len(rels("a")) <= n
        time.sleep(0.3)
        procs["a"] = branch("a")
        procs["tee"].send_signal(signal.SIGKILL)
        procs["tee"].wait()
        time.sleep(0.3)
        procs["tee"] = tee()
        for i in range(n, n + 50):  # live changes after the restarts
            (site / f"f{i:05d}.txt").write_text(str(i))
        both_branches_get({f"f{i:05d}.txt" for i in range(n + 50)}, rels, 120)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait()


def test_a_branch_reader_restarted_while_lines_keep_coming_loses_none(tmp_path: Path) -> None:
    """fc-watch -> FIFO -> fc-tee -> two FIFOs -> fc-relay each, with a file written every 10 ms throughout; branch
    b's reader killed -9 and restarted.  The restarted reader asks fc-watch for what it lacks as it starts, and
    fc-watch re-sends at once (its loop turns with every change).  fc-tee, which opened a FIFO without a reader at
    most every 0.5 s, skipped that replay and the lines after it while the new reader already had its FIFO open;
    the first line that got through carried the replay's tag, so the reader took it as the replay's start and its
    mark went past the skipped ones (the supervisord test: 19 of 20 files written during a restart never sent)."""
    site = tmp_path / "site"
    site.mkdir()
    fifo = {k: tmp_path / f"{k}.fifo" for k in ("watch", "a", "b")}
    for f in fifo.values():
        os.mkfifo(f, 0o600)
    st = tmp_path / "state"
    st.mkdir()
    out = {k: tmp_path / f"{k}.jsonl" for k in ("a", "b")}

    def branch(k: str) -> subprocess.Popen[bytes]:
        return fc("fc-relay", "--min-size", "0", "--input", str(fifo[k]), "--output", str(out[k]),
                  "--state", str(st / f"relay-{k}.db"), stderr=subprocess.DEVNULL)  # fmt: skip

    def rels(k: str) -> set[str]:
        if not out[k].exists():
            return set()
        return {json.loads(line)["rel"] for line in out[k].read_text().splitlines() if line.endswith("}")}

    procs = {"a": branch("a"), "b": branch("b")}
    procs["tee"] = fc("fc-tee", "--input", str(fifo["watch"]), "--output", str(fifo["a"]), "--output",
                      str(fifo["b"]), stderr=subprocess.DEVNULL)  # fmt: skip
    procs["watch"] = fc("fc-watch", "--state", str(st / "watch.db"), "--output", str(fifo["watch"]), str(site),
                        stderr=subprocess.DEVNULL)  # fmt: skip
    n = 0

    def write_for(seconds: float) -> None:
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            (site / f"f{n:05d}.txt").write_text(str(n))
            n += 1
            time.sleep(0.01)

    try:
        deadline = time.monotonic() + 30
        while not (rels("a") and rels("b")) and time.monotonic() < deadline:
            write_for(0.2)
        assert rels("a") and rels("b"), "a branch got nothing before the kill"
        for _ in range(3):
            procs["b"].send_signal(signal.SIGKILL)
            procs["b"].wait()
            write_for(0.3)
            procs["b"] = branch("b")
            write_for(1.5)
        both_branches_get({f"f{i:05d}.txt" for i in range(n)}, rels, 60)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait()
