"""Reading events across FIFO writers: a restarted writer is waited for, a torn line is dropped."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from fileconveyor.delivery.streams import input_lines, named_fifo
from fileconveyor.events import BadLine, events_from
from fileconveyor.stopping import Stopper


def _write(path: Path, data: bytes, delay: float = 0.0) -> None:
    time.sleep(delay)
    with open(path, "wb") as f:  # blocks until the reader has the FIFO open
        f.write(data)


def test_fifo_reader_survives_writer_restarts_and_drops_torn_lines(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    stop = Stopper()
    e1 = b'{"v":1,"kind":"created","path":"/a"}\n'
    e2 = b'{"v":1,"kind":"deleted","path":"/b"}\n'

    def writers() -> None:
        _write(fifo, e1 + b'{"v":1,"kind":"created","path":"/to', 0.1)  # dies mid-line
        _write(fifo, e2, 0.2)  # the restarted writer
        time.sleep(0.3)
        stop.request()

    t = threading.Thread(target=writers)
    t.start()
    bad: list[BadLine] = []
    got = list(events_from(input_lines(str(fifo), None, stop.fileno(), lambda: stop.requested), bad.append))  # type: ignore[arg-type]
    t.join()
    stop.uninstall()
    assert [e["path"] for e in got] == ["/a", "/b"]
    assert len(bad) == 1 and "newline" in bad[0].reason and bad[0].text.startswith(b'{"v":1')


def test_plain_file_input(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_bytes(b'{"v":1,"kind":"created","path":"/a"}\n')
    assert list(input_lines(str(p), None)) == [p.read_bytes()]  # type: ignore[arg-type]


def test_lines_past_the_limit_come_as_long_lines_wherever_the_chunks_cut(tmp_path: Path) -> None:
    """A long line is dropped while it is read, in one chunk or across many, and the lines around it are whole."""
    from fileconveyor.delivery.streams import CHUNK, LongLine

    lines = [b"a" * 10, b"b" * 101, b"c" * 100, b"d" * (3 * CHUNK + 7), b"e", b"f" * 150]
    path = tmp_path / "in"
    path.write_bytes(b"".join(x + b"\n" for x in lines) + b"g" * 120)  # the last one too long and torn
    got = list(input_lines(str(path), None, limit=100))  # type: ignore[arg-type]
    assert [x if not isinstance(x, LongLine) else ("long", x.length) for x in got] == [
        b"a" * 10 + b"\n",
        ("long", 101),
        b"c" * 100 + b"\n",
        ("long", 3 * CHUNK + 7),
        b"e\n",
        ("long", 150),
        ("long", 120),
    ]


def test_a_named_fifo_is_told_from_a_pipe_a_file_and_a_closed_descriptor(tmp_path: Path) -> None:
    """`> x.fifo` (a writer a new process can replace) against `|` (whose writer that goes is the input's end):
    both are S_ISFIFO; only the FIFO in a directory is named."""
    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(fifo, os.O_WRONLY)
    pr, pw = os.pipe()
    f = os.open(tmp_path / "file", os.O_CREAT | os.O_WRONLY)
    try:
        assert named_fifo(r) and named_fifo(w)
        assert not named_fifo(pr) and not named_fifo(pw)
        assert not named_fifo(f)
    finally:
        for fd in (r, w, pr, pw, f):
            os.close(fd)
    assert not named_fifo(f)  # closed: no FIFO
