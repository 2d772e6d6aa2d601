"""delivery/writer.py, the one writer of every command, against real pipes, FIFOs and files."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from fileconveyor.delivery import writer as W
from fileconveyor.delivery.durable import StageState
from fileconveyor.delivery.sending import Sending
from fileconveyor.delivery.writer import Output, Writer
from fileconveyor.report import Reporter


def _read_all(path: Path, out: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(path, "rb") as f:
            out.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def test_a_fifo_is_opened_once_a_reader_has_it_and_not_when_stopped_first(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    stop = {"now": False}
    threading.Timer(0.3, lambda: stop.update(now=True)).start()
    start = time.monotonic()
    assert not Output(str(fifo)).open(lambda: stop["now"])  # nobody reads: gave up on the stop request
    assert time.monotonic() - start >= 0.25
    got: list[bytes] = []
    t = _read_all(fifo, got)
    out = Output(str(fifo))
    assert out.open(lambda: False)
    out.write(b"hello\n")
    out.close()
    t.join(5)
    assert got == [b"hello\n"]


def test_a_path_that_is_no_longer_a_fifo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out"
    os.mkfifo(path)
    out = Output(str(path))  # a FIFO when looked at ...
    path.unlink()
    path.write_bytes(b"")  # ... a regular file when opened (someone swapped it)
    with pytest.raises(OSError, match="no longer a FIFO"):
        out.open(lambda: False)


def test_a_regular_file_is_appended_to_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"old\n")
    path.chmod(0o644)
    w = Writer(Output(str(path)))
    assert w.open()
    w.send([b"a\n", b"b\n"])
    w.close()
    assert path.read_bytes() == b"old\na\nb\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # its lines carry our epoch


def test_a_stdout_pipe_closed_by_its_reader_is_a_broken_pipe_and_quit_early(tmp_path: Path) -> None:
    r, w = os.pipe()
    with os.fdopen(w, "wb") as stdout:
        writer = Writer(Output(None, stdout))
        writer.open()
        writer.send([b"one\n"], [1])
        assert writer.tail.active and writer.tail.read_upto(1) == 0  # written, not read yet
        os.close(r)
        assert writer.output.reader_gone()
        with pytest.raises(BrokenPipeError):
            writer.send([b"two\n"], [2])
        assert writer.tail.quit_early  # nothing of this run counts as delivered


def test_a_released_stdout_pipe_ends_its_readers_input_while_we_still_run(tmp_path: Path) -> None:
    """Output.release (a stage's exit, Sending.close_early): the reader sees the end now, not at our exit; what
    it had not read counts as not delivered; a line written after is an error, never a silent loss."""
    r, w = os.pipe()
    with os.fdopen(w, "wb") as stdout:
        writer = Writer(Output(None, stdout))
        writer.open()
        writer.send([b"one\n", b"two\n"], [1, 2])
        assert writer.output.release()
        assert os.read(r, 100) == b"one\ntwo\n" and os.read(r, 100) == b""  # EOF: nobody else holds it
        assert writer.tail.delivered(2, 0) == 0  # unread when let go of: not counted as delivered
        with pytest.raises(BrokenPipeError):
            writer.send([b"three\n"], [3])
        assert os.fstat(stdout.fileno())  # the process's stdout still has a valid descriptor
        assert not writer.output.release()  # once
    os.close(r)
    path = tmp_path / "out"
    regular = Output(str(path))
    regular.open()
    assert not regular.release()  # a file is not let go of early: nothing waits for its end
    regular.close()


def test_wait_mode_gives_the_next_reader_of_a_fifo_what_resend_says(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    warned: list[str] = []
    w = Writer(Output(str(fifo)), "wait", resend=lambda: [b"all\n", b"again\n"], warn=warned.append)
    assert w.open()
    w.send([b"first\n"])
    assert os.read(rfd, 100) == b"first\n"
    os.close(rfd)  # the reader is restarted
    got: list[bytes] = []
    threading.Timer(0.2, lambda: _read_all(fifo, got)).start()
    w.send([b"lost\n"])  # waits for the next reader, then writes what resend gives instead
    w.close()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got == [b"all\nagain\n"]
    assert any("went away" in text for text in warned) and any("is back" in text for text in warned)


def test_skip_mode_goes_on_without_a_gone_reader_and_writes_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(W, "REOPEN_EVERY", 0.05)
    fifo = tmp_path / "branch.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = Writer(Output(str(fifo)), "skip")
    assert w.open(wait=False)
    assert w.send([b"a\n"])
    os.close(rfd)
    assert not w.send([b"b\n"])  # skipped, not waited for
    assert not w.send([b"c\n"])  # no reader yet: skipped at once
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    time.sleep(0.1)
    assert w.send([b"d\n"])
    assert os.read(rfd, 100) == b"d\n"
    os.close(rfd)
    w.close()


def test_a_replay_keeps_an_outbox_line_that_no_longer_decodes(tmp_path: Path) -> None:
    """A line an older version stored, which this one's decoder refuses, goes out as it is (its reader reports it)
    instead of stopping the replay: the runner's replay yielded it without its seq, and the replay failed."""
    state = StageState(tmp_path / "s.db")
    try:
        good = {"v": 1, "kind": "created", "path": "/a", "hop": {"from": "x", "epoch": "e", "seq": 2}}
        with state.transaction() as db:
            state.add_outbox(db, [(1, b'{"v":1,"kind":"created"}\n'), (2, json.dumps(good).encode() + b"\n")])
        r, w = os.pipe()
        with os.fdopen(w, "wb") as stdout:
            sending = Sending(state, None, stdout, Reporter("t", io.StringIO()), lambda: False)
            assert sending.open()
            sending.replays.tag = ["reader-session"]  # a replay for a restarted reader: lines are tagged
            sending.replay(after=0)
        lines = os.read(r, 10_000).splitlines()
        os.close(r)
        assert lines[0] == b'{"v":1,"kind":"created"}'
        assert json.loads(lines[1])["hop"]["for"] == ["reader-session"]
    finally:
        state.close()
