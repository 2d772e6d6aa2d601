"""Into a pipe or FIFO, a writer killed while it waits for room leaves whole lines only (writer.PIPE_BUF): the
torn start of a line, glued to the next writer's first line, cost that line (tests/durability/
test_torn_line_glued.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from hypothesis import given
from hypothesis import strategies as st

from fileconveyor.delivery.writer import PIPE_BUF, whole_lines_within
from tests.conftest import ROOT

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from fileconveyor.delivery.writer import Output
out = Output(None, sys.stdout.buffer)
out.open()
lines = [b'{"n":%d,"pad":"%s"}\\n' % (i, b"x" * (i % 700)) for i in range(2000)]
out.write(b"".join(lines))  # ~700 KB into a pipe of 64 KiB nobody reads: it waits for room
"""


def test_a_writer_killed_while_waiting_for_room_leaves_whole_lines() -> None:
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT / "lib")], stdout=w)
    os.close(w)
    try:
        deadline = time.monotonic() + 30
        with open(f"/proc/{child.pid}/wchan") as f:
            pass
        while time.monotonic() < deadline:  # until it is blocked on the full pipe
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "S" and _unread(r) > 60_000:
                    break
            time.sleep(0.05)
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait()
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
    finally:
        os.close(r)
    assert len(data) > 60_000
    assert data.endswith(b"\n"), data[-80:]  # the old single write: cut wherever the pipe was full


def _unread(fd: int) -> int:
    import array
    import fcntl
    import termios

    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


@given(st.lists(st.integers(min_value=0, max_value=3 * PIPE_BUF), min_size=1, max_size=30))
def test_pieces_are_whole_lines_within_the_limit(lengths: list[int]) -> None:
    data = b"".join(b"x" * n + b"\n" for n in lengths)
    pieces = [bytes(p) for p in whole_lines_within(data, PIPE_BUF)]
    assert b"".join(pieces) == data
    for p in pieces:
        assert p.endswith(b"\n")
        assert len(p) <= PIPE_BUF or p.count(b"\n") == 1  # a longer line goes alone
