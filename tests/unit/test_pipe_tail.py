"""pipe_tail: what the reader of a pipe has read, on real pipes (Linux FIONREAD and POLLERR)."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor.delivery.pipe_tail import PipeTail


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def send(tail: PipeTail, w: int, lines: dict[int, bytes]) -> None:
    """Write ``lines`` (seq -> line) into the pipe and tell the tail."""
    os.write(w, b"".join(lines.values()))
    tail.wrote(list(lines), [len(x) for x in lines.values()])


def test_read_upto_counts_only_lines_read_whole(pipe: tuple[int, int]) -> None:
    r, w = pipe
    tail = PipeTail(w)
    assert tail.active
    send(tail, w, {5: b"a" * 9 + b"\n", 6: b"b" * 9 + b"\n", 9: b"c" * 9 + b"\n"})
    assert tail.read_upto(9) == 4  # nothing read: not even the first line
    os.read(r, 15)  # the first line and half the second
    assert tail.read_upto(9) == 5
    os.read(r, 5)
    assert tail.read_upto(9) == 6
    os.read(r, 10)
    assert tail.read_upto(9) == 9 and tail.delivered(9, 2) == 9
    assert not tail.gone()


def test_a_reader_that_closes_before_the_end_took_nothing_of_the_run(pipe: tuple[int, int]) -> None:
    r, w = pipe
    tail = PipeTail(w)
    send(tail, w, {3: b"x\n"})
    os.read(r, 2)  # it read the line, then left before our end (head)
    os.close(r)
    assert tail.settle(5.0, lambda: False, lambda: False) == "gone"
    assert tail.quit_early and tail.delivered(3, 2) == 2


def test_settle_waits_for_the_reader_then_gives_the_unread_back(pipe: tuple[int, int]) -> None:
    r, w = pipe
    tail = PipeTail(w)
    send(tail, w, {1: b"1\n", 2: b"2\n"})
    started = time.monotonic()
    assert tail.settle(0.3, lambda: False, lambda: False) == "timeout"  # a reader that does not read
    assert time.monotonic() - started >= 0.3 and tail.delivered(2, 0) == 0
    os.read(r, 4)
    assert tail.settle(5.0, lambda: False, lambda: False) == "read"  # read all, still there (jq)
    assert tail.delivered(2, 0) == 2
    send(tail, w, {3: b"3\n"})
    assert tail.settle(5.0, lambda: False, lambda: True) == "fc"  # a File Conveyor reader registered


def test_not_a_pipe_is_not_tracked(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as f:
        tail = PipeTail(f.fileno())
        assert not tail.active and tail.delivered(7, 1) == 7
        assert tail.settle(5.0, lambda: False, lambda: False) == "read"


def test_a_reader_registering_soon_after_our_end_is_seen_within_10_ms(pipe: tuple[int, int]) -> None:
    """At our end the next stage may still be starting; it registers a few ms after it reads our lines.  settle
    looks at most every 10 ms during its first second (it backed off to 50 ms: up to 50 ms more on every short
    run's end, the next stage seeing our end only after it)."""
    _, w = pipe
    tail = PipeTail(w)
    os.write(w, b"x\n")
    tail.wrote([1], [2])
    looks: list[float] = []

    def fc_reader() -> bool:
        looks.append(time.monotonic())
        return len(looks) > 1 and looks[-1] - looks[0] >= 0.4

    assert tail.settle(5.0, lambda: False, fc_reader) == "fc"
    gaps = sorted(b - a for a, b in itertools.pairwise(looks))
    # poll(10) sleeps 10 ms or a little more; a loaded machine stretches a few gaps, not the typical one
    assert gaps[len(gaps) // 2] < 0.02, gaps


def test_lines_kept_after_many_writes_still_tell_what_was_read_whole() -> None:
    """The tail keeps only the last pipe's worth of lines (cut once per write, from the newest end): after
    rounds of writes far beyond the pipe's size, each partly read, read_upto still names the last line read
    whole, as counted by the reader."""
    import random

    rng = random.Random(18)
    r, w = os.pipe()
    try:
        tail = PipeTail(w)
        tail._keep = 16384  # a quarter of the pipe: one partly read always has room for it
        read_total, ends, seq = 0, [], 0  # ends: (seq, the byte count that has it whole)
        written = 0
        for _ in range(200):
            room = tail._keep - (written - read_total)
            batch = {}
            while True:
                size = rng.randint(1, 900)
                if sum(map(len, batch.values())) + size > room:
                    break
                seq += 1
                batch[seq] = b"x" * (size - 1) + b"\n"
                written += size
                ends.append((seq, written))
            send(tail, w, batch)
            read_total += len(os.read(r, rng.randint(0, written - read_total) or 1))
            whole = max((s for s, end in ends if end <= read_total), default=0)
            assert tail.read_upto(seq) == (seq if read_total == written else whole)
        assert len(tail._lines) < tail._keep  # not every line ever written
    finally:
        os.close(r)
        os.close(w)


def test_a_stages_output_pipe_holds_a_round_of_lines_without_its_reader(pipe: tuple[int, int]) -> None:
    """A stage writes a round's lines at once (fc-transport: 512-575 lines of about 600 bytes).  Into the default
    64 KiB pipe, the write waited until the reader had read all but the last 64 KiB: fc-transport, the busiest
    stage of a pipeline, waited for fc-record 1-7 ms a round that way (150-300 ms a run on a loaded machine).  The
    pipe is grown to PIPE_SIZE, and what was read is still told line by line."""
    r, w = pipe
    tail = PipeTail(w)
    os.set_blocking(w, False)  # a write that would wait raises BlockingIOError instead
    round_ = {seq: b"x" * 599 + b"\n" for seq in range(1, 576)}
    send(tail, w, round_)  # all of it, no reader yet
    assert tail.read_upto(575) == 0
    os.read(r, 600 * 500)
    assert tail.read_upto(575) == 500
