"""The end of a pipeline without a fixed tail (issue 18): a stage whose input ended lets go of its stdout pipe
before it waits for its readers' last acknowledgement (delivery/sending.py, Sending.close_early).

Before, it held the pipe until acknowledged; its reader, not seeing the end, acknowledged only once its input had
been quiet for 0.1 s (runner.IDLE_ACK_QUIET), the writer saw that at its next look (5-80 ms), exited, and only
then did the reader see the end: the same again one hop further, 0.16-0.40 s at the end of every run.

Real stages on real pipes: the reader is stopped (SIGSTOP) when its writer's input ends, so it cannot
acknowledge; the writer must let go of the pipe all the same.  What must still hold: a reader killed meanwhile
is noticed (exit 141, the rest re-sent next run), a pass-through between them ending at the writer's end is
not taken for the reader, and a pipe whose lines go on into a named FIFO (whose reader may restart and be
re-sent to) is held as before.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, held_for

N = 5


def _lines(tmp_path: Path, env: dict[str, str]) -> list[bytes]:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(N):
        (src / f"f{i}.bin").write_bytes(b"x")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-watch"), "--scan-once", "--state", str(tmp_path / "watch.db"), src],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines(keepends=True)
    assert len(lines) == N
    return lines


def _acked(state: Path) -> int:
    """The highest seq the writer's reader acknowledged (0: none yet, or the writer not started yet)."""
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        try:
            return db.execute("SELECT coalesce(max(seq), 0) FROM acks").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def _ident(pid: int, fd: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _until(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Hop:
    """``lines > fc-filter (writer) [| between] | fc-filter (reader)``, the writer's input ours to end."""

    def __init__(self, tmp_path: Path, between: list[str] | None = None, fifo: bool = False):
        self.env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT / "lib")}
        self.lines = _lines(tmp_path, self.env)
        self.wstate = tmp_path / "w.db"
        self.err = tmp_path / "writer.err"
        # the saved lines' writer (fc-watch) is not running to re-send: held 0.5 s, not 10 (Holding.AWAIT_SECONDS)
        stage = [*held_for(0.5, "relay"), "-v", "--drain-timeout", "60"]
        with open(self.err, "wb") as err:
            self.writer = subprocess.Popen(
                [*stage, "--state", str(self.wstate)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
            )
        assert self.writer.stdout is not None
        self.between: subprocess.Popen[bytes] | None = None
        into: object = self.writer.stdout
        source = ["--input", str(tmp_path / "fifo")] if fifo else []
        if between is not None:
            if fifo:
                os.mkfifo(tmp_path / "fifo", 0o600)
            out: object = subprocess.PIPE
            self.between = subprocess.Popen(
                ["sh", "-c", f"exec {' '.join(between)} > {tmp_path / 'fifo'}"] if fifo else between,
                stdin=self.writer.stdout,
                stdout=subprocess.DEVNULL if fifo else out,  # type: ignore[arg-type]
            )
            into = subprocess.DEVNULL if fifo else self.between.stdout
        self.out = tmp_path / "out"
        with open(self.out, "wb") as out_file:  # a file: the reader does not wait for it to be read at its end
            self.reader = subprocess.Popen(
                [*stage, "--state", str(tmp_path / "r.db"), *source],
                stdin=into,  # type: ignore[arg-type]
                stdout=out_file,
                stderr=subprocess.DEVNULL,
                env=self.env,
            )
        self.writer.stdout.close()
        if self.between is not None and self.between.stdout is not None:
            self.between.stdout.close()
        self.pipe = _ident(self.writer.pid, 1)

    def start(self) -> None:
        """All lines but the last, acknowledged; then the reader stopped, the last line written, our input ended."""
        assert self.writer.stdin is not None
        self.writer.stdin.write(b"".join(self.lines[:-1]))
        self.writer.stdin.flush()
        assert _until(lambda: _acked(self.wstate) >= N - 1), self.err.read_text()
        os.kill(self.reader.pid, signal.SIGSTOP)
        self.writer.stdin.write(self.lines[-1])
        self.writer.stdin.close()

    def holds_pipe(self) -> bool:
        return _ident(self.writer.pid, 1) == self.pipe

    def close(self) -> None:
        for proc in (self.reader, self.between, self.writer):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait(timeout=30)


def test_a_writer_whose_input_ended_lets_go_of_its_pipe_before_the_last_acknowledgement(tmp_path: Path) -> None:
    hop = Hop(tmp_path)
    try:
        hop.start()
        # the reader is stopped and cannot acknowledge the last line: the writer lets go of the pipe all the same,
        # so its reader sees the end as soon as it reads on (before: held until acknowledged, 0.1 s of quiet later)
        assert _until(lambda: not hop.holds_pipe()), hop.err.read_text()
        assert hop.writer.poll() is None  # still waiting for the acknowledgement
        os.kill(hop.reader.pid, signal.SIGCONT)
        assert hop.reader.wait(timeout=30) == 0
        got = hop.out.read_bytes().splitlines()
        assert hop.writer.wait(timeout=30) == 0, hop.err.read_text()
        assert len(got) == N
        assert _acked(hop.wstate) == N  # the writer exited once its reader had acknowledged everything
    finally:
        hop.close()


def test_a_reader_killed_after_its_writer_let_go_is_noticed(tmp_path: Path) -> None:
    hop = Hop(tmp_path)
    try:
        hop.start()
        assert _until(lambda: not hop.holds_pipe()), hop.err.read_text()
        hop.reader.kill()
        # seen by the reader's exit, not after --drain-timeout (60 s): exit 141, the last line re-sent next run
        assert hop.writer.wait(timeout=20) == 141, hop.err.read_text()
        assert "went away" in hop.err.read_text()
        assert _acked(hop.wstate) == N - 1
    finally:
        hop.close()


def test_a_pass_through_ending_at_the_writers_end_is_not_taken_for_the_reader(tmp_path: Path) -> None:
    hop = Hop(tmp_path, between=["cat"])
    try:
        hop.start()
        assert _until(lambda: not hop.holds_pipe()), hop.err.read_text()
        assert hop.between is not None
        assert hop.between.wait(timeout=20) == 0  # cat saw the end and left; the reader, stopped, is still there
        time.sleep(0.3)
        assert hop.writer.poll() is None, hop.err.read_text()
        os.kill(hop.reader.pid, signal.SIGCONT)
        assert hop.reader.wait(timeout=30) == 0
        assert hop.writer.wait(timeout=30) == 0, hop.err.read_text()
        assert _acked(hop.wstate) == N
    finally:
        hop.close()


def test_a_pipe_that_goes_on_into_a_named_fifo_is_held_as_before(tmp_path: Path) -> None:
    """The FIFO's reader may be restarted (supervisord) and be re-sent to through the same pipe: kept open."""
    hop = Hop(tmp_path, between=["cat"], fifo=True)
    try:
        hop.start()
        assert hop.writer.stdin is not None
        time.sleep(1.0)  # the writer's end, waiting for the last acknowledgement (a let-go comes within ms)
        assert hop.holds_pipe() and hop.writer.poll() is None, hop.err.read_text()
        os.kill(hop.reader.pid, signal.SIGCONT)
        assert hop.writer.wait(timeout=30) == 0, hop.err.read_text()
        assert _acked(hop.wstate) == N
    finally:
        hop.close()
