"""pipe_tail: what the reader of a pipe has read, on real pipes (Linux FIONREAD and POLLERR)."""

from __future__ import annotations

import os
import time

from fileconveyor.pipe_tail import PipeTail


def test_read_upto_counts_only_lines_read_whole() -> None:
    r, w = os.pipe()
    try:
        tail = PipeTail(w)
        assert tail.active
        lines = [b"a" * 9 + b"\n", b"b" * 9 + b"\n", b"c" * 9 + b"\n"]
        os.write(w, b"".join(lines))
        tail.wrote([5, 6, 9], [len(x) for x in lines])
        assert tail.read_upto(9) == 4  # nothing read: not even the first line
        os.read(r, 15)  # the first line and half the second
        assert tail.read_upto(9) == 5
        os.read(r, 5)
        assert tail.read_upto(9) == 6
        os.read(r, 10)
        assert tail.read_upto(9) == 9 and tail.delivered(9, 2) == 9
        assert not tail.gone()
    finally:
        os.close(w)
        os.close(r)


def test_a_reader_that_closes_before_the_end_took_nothing_of_the_run() -> None:
    r, w = os.pipe()
    try:
        tail = PipeTail(w)
        os.write(w, b"x\n")
        tail.wrote([3], [2])
        os.read(r, 2)  # it read the line, then left before our end (head)
        os.close(r)
        assert tail.settle(5.0, lambda: False, lambda: False) == "gone"
        assert tail.quit_early and tail.delivered(3, 2) == 2
    finally:
        os.close(w)


def test_settle_waits_for_the_reader_then_gives_the_unread_back() -> None:
    r, w = os.pipe()
    try:
        tail = PipeTail(w)
        os.write(w, b"1\n2\n")
        tail.wrote([1, 2], [2, 2])
        started = time.monotonic()
        assert tail.settle(0.3, lambda: False, lambda: False) == "timeout"  # a reader that does not read
        assert time.monotonic() - started >= 0.3 and tail.delivered(2, 0) == 0
        os.read(r, 4)
        assert tail.settle(5.0, lambda: False, lambda: False) == "read"  # read all, still there (jq)
        assert tail.delivered(2, 0) == 2
        os.write(w, b"3\n")
        tail.wrote([3], [2])
        assert tail.settle(5.0, lambda: False, lambda: True) == "fc"  # a File Conveyor reader registered
    finally:
        os.close(w)
        os.close(r)


def test_not_a_pipe_is_not_tracked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open(tmp_path / "f", "wb") as f:
        tail = PipeTail(f.fileno())
        assert not tail.active and tail.delivered(7, 1) == 7
        assert tail.settle(5.0, lambda: False, lambda: False) == "read"
