"""The narrower scans of /proc (delivery/ack_check.py) give what the scan of every open file gave.

``stdin_readers`` and ``pipeline_after`` look at stdin alone, and ``writer_holds`` first follows a shell pipeline's
stdin and stdout links (``_writer_on_stdio_holds``) before it scans every file of every process.  Each is checked
here against the full scan on real processes, hostile ones included: a process holding the writer's state file
and our pipe on another descriptor, or our pipe's read end as its stdout, or a pipe's write end as its stdin."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor.delivery import ack_check

# a process that opens the file it is given (if any: on descriptor 9, kept by sleep), says so, and waits
HOLD = 'if [ -n "$1" ]; then exec 9<"$1"; fi; printf . >&2; exec sleep 60'


class Procs:
    def __init__(self, target: Path):
        self.target = target
        self.running: list[subprocess.Popen[bytes]] = []

    def spawn(self, stdin: int, stdout: int, hold: bool = False, extra: tuple[int, ...] = ()) -> int:
        p = subprocess.Popen(
            ["/bin/sh", "-c", HOLD, "sh", str(self.target) if hold else ""],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            pass_fds=extra,
        )
        self.running.append(p)
        assert p.stderr is not None and p.stderr.read(1) == b"."
        deadline = time.monotonic() + 10
        while Path(f"/proc/{p.pid}/comm").read_text() != "sleep\n":  # its exec done: its descriptors settled
            assert time.monotonic() < deadline
            time.sleep(0.001)
        return p.pid


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    target = tmp_path / "writer.db"
    target.write_bytes(b"")
    ps = Procs(target)
    yield ps
    for p in ps.running:
        p.kill()
        p.wait()
        if p.stderr is not None:
            p.stderr.close()


def _ident(fd: int) -> ack_check.Ident:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _full_writer_holds(pipe: ack_check.Ident, target: Path, monkeypatch: pytest.MonkeyPatch) -> bool | None:
    with monkeypatch.context() as m:
        m.setattr(ack_check, "_writer_on_stdio_holds", lambda pipe, target: False)
        return ack_check.writer_holds(pipe, str(target))


def _topology(name: str, procs: Procs, stack: contextlib.ExitStack) -> ack_check.Ident:
    """Processes around a pipe whose read end only we keep; returns that pipe."""
    r, w = os.pipe()
    stack.callback(os.close, r)
    r2, w2 = os.pipe()
    try:
        if name == "writer with the file":
            procs.spawn(subprocess.DEVNULL, w, hold=True)
        elif name == "writer without the file":
            procs.spawn(subprocess.DEVNULL, w)
        elif name == "pass-through":  # holder | tee | us
            procs.spawn(subprocess.DEVNULL, w2, hold=True)
            procs.spawn(r2, w)
        elif name == "two pass-throughs":
            r3, w3 = os.pipe()
            procs.spawn(subprocess.DEVNULL, w3, hold=True)
            procs.spawn(r3, w2)
            procs.spawn(r2, w)
            os.close(r3)
            os.close(w3)
        elif name == "holder writing on another descriptor":  # found by the full scan only
            other = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 20)  # not 9, the holder's file
            try:
                procs.spawn(subprocess.DEVNULL, subprocess.DEVNULL, hold=True, extra=(other,))
            finally:
                os.close(other)
        elif name == "holder with our read end as stdout":  # it cannot write there
            procs.spawn(subprocess.DEVNULL, r, hold=True)
            procs.spawn(subprocess.DEVNULL, w)
        elif name == "holder reading our pipe":  # a reader, not a writer
            procs.spawn(r, subprocess.DEVNULL, hold=True)
            procs.spawn(subprocess.DEVNULL, w)
        elif name == "pass-through whose stdin is a write end":  # takes no lines from the holder
            procs.spawn(subprocess.DEVNULL, w2, hold=True)
            procs.spawn(w2, w)
        elif name == "nobody writes":
            procs.spawn(r, subprocess.DEVNULL, hold=True)
        else:
            raise AssertionError(name)
    finally:
        os.close(w)
        os.close(r2)
        os.close(w2)
    return _ident(r)


# name: (the quick look's answer, the full scan's)
CASES = {
    "writer with the file": (True, True),
    "writer without the file": (False, False),
    "pass-through": (True, True),
    "two pass-throughs": (True, True),
    "holder writing on another descriptor": (False, True),
    "holder with our read end as stdout": (False, False),
    "holder reading our pipe": (False, False),
    "pass-through whose stdin is a write end": (False, False),
    "nobody writes": (False, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_quick_look_at_a_pipelines_writers_says_true_only_where_the_full_scan_does(
    name: str, procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.ExitStack() as stack:
        pipe = _topology(name, procs, stack)
        target = (os.stat(procs.target).st_dev, os.stat(procs.target).st_ino)
        quick = ack_check._writer_on_stdio_holds(pipe, target)
        full = _full_writer_holds(pipe, procs.target, monkeypatch)
        assert (quick, full) == CASES[name]
        assert ack_check.writer_holds(pipe, str(procs.target)) == full


def _stdin_readers_from_every_file(pipe: ack_check.Ident) -> list[int]:
    return [pid for pid, fd in ack_check._open_files().get(pipe, ()) if fd == "0" and pid != os.getpid()]


def test_stdin_readers_and_pipeline_after_are_what_the_scan_of_every_file_gives(procs: Procs) -> None:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        first = procs.spawn(r, w2)  # reads our pipe as stdin, writes the next: `| tee |`
        second = procs.spawn(r2, subprocess.DEVNULL)
        other = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 20)
        procs.spawn(subprocess.DEVNULL, subprocess.DEVNULL, extra=(other,))  # holds it on another descriptor
        os.close(other)
        procs.spawn(subprocess.DEVNULL, r)  # as its stdout
        os.close(r2)
        os.close(w2)
        pipe = _ident(w)
        assert sorted(ack_check.stdin_readers(pipe)) == sorted(_stdin_readers_from_every_file(pipe)) == [first]
        assert ack_check.pipeline_after(pipe) == [first, second]
    finally:
        os.close(r)
        os.close(w)
