"""Running the real fc-watch: a process whose stdout is read by a thread that parses
events as they come, plus small helpers to build trees and compare what was reported
with what is on disk.  Paths are bytes throughout (a file name is any bytes)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fileconveyor.events import get_path

ROOT = Path(__file__).resolve().parents[2]
# The command under test: this checkout's launcher unless FC_WATCH_BIN names another one.
FC_WATCH = os.environ.get("FC_WATCH_BIN") or str(ROOT / "bin" / "fc-watch")
MARK_ENV = "FC_WATCH_TEST_MARK"  # set in every fc-watch started by the tests: how leaks are found

Event = dict[str, Any]
Change = tuple[str, bytes]  # (kind, rel)
Snapshot = dict[bytes, tuple[int, int, int]]  # rel -> (size, mtime_ns, ino)


# -- events ----------------------------------------------------------------------------


def rel_of(ev: Event) -> bytes:
    return get_path(ev, "rel")


def change(ev: Event) -> Change:
    return ev["kind"], rel_of(ev)


def changes(events: Iterable[Event]) -> Counter[Change]:
    return Counter(change(ev) for ev in events)


def expect(kind: str, rels: Iterable[bytes | str]) -> Counter[Change]:
    return Counter((kind, os.fsencode(r)) for r in rels)


def replay(events: Iterable[Event], source: str | None = None) -> Snapshot:
    """What a downstream that applies the events in order believes is on disk."""
    view: Snapshot = {}
    for ev in events:
        if source is not None and ev["source"] != source:
            continue
        rel = rel_of(ev)
        if ev["kind"] == "deleted":
            view.pop(rel, None)
        else:
            view[rel] = (ev["size"], int(ev["mtime_ns"]), ev["ino"])
    return view


def snapshot(root: Path | bytes) -> Snapshot:
    """Every regular file below ``root`` (symlinks not followed), as fc-watch would see it."""
    base = os.fsencode(root)
    out: Snapshot = {}
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out[os.path.relpath(path, base)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


# -- trees -----------------------------------------------------------------------------


def write(path: Path | bytes, data: bytes = b"x", mtime_ns: int | None = None) -> None:
    """Create or overwrite a file (parents included), optionally setting its mtime."""
    p = os.fsencode(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    # One write(2) over the old bytes, then a truncation only if the file shrinks: opening with O_TRUNC first
    # showed a poller the file emptied, and a writer stalled longer than --settle between the two calls (a loaded
    # CI machine) is then two real changes, not the one a test expects.
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)


def make_files(root: Path, rels: Iterable[str], data: bytes = b"data", age_s: float = 0.0) -> list[str]:
    """Write each file; with ``age_s`` its mtime is set that far in the past (already settled)."""
    out = []
    mtime = time.time_ns() - int(age_s * 1e9) if age_s else None
    for r in rels:
        write(root / r, data, mtime)
        out.append(r)
    return out


_MAKE_MANY = """
import os, sys, time
directory, count, prefix, data, age_ns = sys.argv[1:]
count, data, age_ns = int(count), data.encode(), int(age_ns)
os.makedirs(directory, exist_ok=True)
mtime = time.time_ns() - age_ns
for i in range(count):
    fd = os.open(f"{directory}/{prefix}{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    if age_ns:
        os.utime(fd, ns=(mtime, mtime))
    os.close(fd)
"""


def make_many(
    directory: Path, count: int, prefix: str = "f", data: str = "0123456789", age_s: float = 0.0
) -> list[str]:
    """``count`` small files named prefix00000... in ``directory`` (with ``age_s``, their mtime
    that far in the past).  Written by a child process: in this one the threads reading
    fc-watch's output would slow the writer down (GIL), and a burst would not be one."""
    args = [str(directory), str(count), prefix, data, str(int(age_s * 1e9))]
    subprocess.run([sys.executable, "-c", _MAKE_MANY, *args], check=True, timeout=120)
    return [f"{prefix}{i:05d}" for i in range(count)]


# -- the process -----------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


@dataclass
class FcWatch:
    """One running fc-watch.  ``events`` grows as lines arrive on its stdout."""

    argv: list[str]
    env: dict[str, str]
    preexec: Callable[[], None] | None = None
    proc: subprocess.Popen[bytes] = field(init=False)
    lines: list[bytes] = field(default_factory=list, init=False)
    events: list[Event] = field(default_factory=list, init=False)
    bad_lines: list[bytes] = field(default_factory=list, init=False)  # whole lines that are not JSON
    torn: bytes | None = field(default=None, init=False)  # a last line without its newline
    stderr_lines: list[str] = field(default_factory=list, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _last_event_at: float = field(default=0.0, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, FC_WATCH, *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            preexec_fn=self.preexec,
        )
        self._last_event_at = time.monotonic()
        for target in (self._read_stdout, self._read_stderr):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)

    # -- readers ---------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self.lines.append(line)
                if not line.endswith(b"\n"):  # only ever the last line: a write cut short by death
                    self.torn = line
                else:
                    try:
                        self.events.append(json.loads(line))
                    except ValueError:
                        self.bad_lines.append(line)
                self._last_event_at = time.monotonic()
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.stderr_lines.append(line.decode("utf-8", "replace"))
                self._cond.notify_all()

    # -- waiting ---------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self.stderr_lines)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate()`` holds; it is evaluated under the lock."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the catch-up scan to end ("ready:" on stderr, needs -v)."""
        ok = self.wait_until(
            lambda: any("ready:" in s for s in self.stderr_lines) or self.proc.poll() is not None, timeout
        )
        if not ok or self.proc.poll() is not None:
            raise AssertionError(f"fc-watch did not become ready (exit {self.proc.poll()}):\n{self.stderr}")

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def since(self, mark: int) -> list[Event]:
        with self._cond:
            return list(self.events[mark:])

    def idle(self) -> float:
        """Seconds since the last line arrived (or since the start)."""
        with self._cond:
            return time.monotonic() - self._last_event_at

    def count(self) -> int:
        with self._cond:
            return len(self.events)

    def wait_count(self, n: int, timeout: float) -> bool:
        return self.wait_until(lambda: len(self.events) >= n, timeout)

    def quiet(self, period: float, timeout: float = 30.0) -> None:
        """Return once no line arrived for ``period`` seconds (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                idle = time.monotonic() - self._last_event_at
            if idle >= period:
                return
            time.sleep(min(period - idle, 0.05) + 0.001)

    def collect(self, mark: int, wanted: Counter[Change], timeout: float, quiet: float) -> Counter[Change]:
        """Wait until every change in ``wanted`` arrived after ``mark`` (or ``timeout``),
        then for a quiet period; return every change that arrived after ``mark``."""

        def have() -> bool:
            got = changes(self.events[mark:])
            return all(got[k] >= n for k, n in wanted.items())

        self.wait_until(have, timeout)
        self.quiet(quiet)
        return changes(self.since(mark))

    def collect_promptly(
        self, wanted: Counter[Change], prompt: float, patience: float, quiet: float
    ) -> Counter[Change]:
        """Like collect() from the start, but every change in ``wanted`` must arrive within
        ``prompt`` seconds; when some do not, wait up to ``patience`` to tell late from lost,
        and fail saying which."""
        t0 = time.monotonic()
        got = self.collect(0, wanted, prompt, quiet)
        missing = wanted - got
        if not missing:
            return got
        got = self.collect(0, wanted, patience - (time.monotonic() - t0), quiet)
        lost = wanted - got
        assert not lost, f"{len(lost)} changes never reported, e.g. {sorted(lost)[:5]}"
        raise AssertionError(
            f"{len(missing)} changes reported late, after {time.monotonic() - t0:.0f}s instead of <{prompt:g}s: "
            f"{sorted(missing)[:5]}\n{self.stderr}"
        )

    # -- stopping --------------------------------------------------------------------

    def send(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return rc

    def terminate(self, timeout: float = 30.0) -> int:
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill9(self) -> None:
        self.send(signal.SIGKILL)
        self.wait_exit()


@dataclass
class Done:
    """A finished fc-watch run (--scan-once, or a usage error)."""

    status: int
    lines: list[bytes]
    events: list[Event]
    stderr: str


def parse_lines(out: bytes) -> tuple[list[bytes], list[Event]]:
    lines = out.splitlines(keepends=True)
    return lines, [json.loads(line) for line in lines]


def run_once(
    argv: Sequence[str], env: dict[str, str], timeout: float = 60.0, preexec: Callable[[], None] | None = None
) -> Done:
    p = subprocess.run(
        [sys.executable, FC_WATCH, *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=timeout,
        preexec_fn=preexec,
    )
    lines, events = parse_lines(p.stdout)
    return Done(p.returncode, lines, events, p.stderr.decode("utf-8", "replace"))


# -- leaks -----------------------------------------------------------------------------


def marked_pids(mark: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``MARK_ENV=mark``."""
    needle = f"{MARK_ENV}={mark}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read() + b"\0"
            with open(f"/proc/{entry}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        state = st[st.rfind(b")") + 2 : st.rfind(b")") + 3]
        if needle in env and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


# -- names -----------------------------------------------------------------------------

HOSTILE_NAMES: list[bytes] = [
    b"with space",
    b" leading and trailing ",
    b"new\nline",
    b"carriage\rreturn",
    b"tab\there",
    b'double"quote',
    b"single'quote",
    b"back\\slash",
    b"-leading-dash",
    b"--help",
    b"-",
    b"a" * 255,  # the longest name ext4 allows
    "é".encode() * 127 + b"x",  # 255 bytes, multibyte
    b"\xff\xfe",  # not UTF-8
    b"latin1-caf\xe9",  # not UTF-8 either
    "\u00e9".encode(),  # NFC "é" ...
    "e\u0301".encode(),  # ... and NFD "é": two different files
    b"*?[glob]",
    b"emoji-\xf0\x9f\x98\x80",
    b"ctrl-\x01\x1b",
    b"$(echo hi) `x`",
]
HOSTILE_DIR = b"dir with\nnewline\xff"  # a directory whose name is hostile too

# Trees for --ignore-dirs CVS:.svn --exclude '*.tmp': what is left out, what is kept.
IGNORED = [
    "CVS/Entries",
    "a/.svn/entries",
    "a/b/CVS/Root",
    "a/b/c/.svn/x/y",
    "junk.tmp",
    "a/b/more.tmp",
    "cache.tmp/inner.txt",
]
KEPT = ["index.php", "a/CVS.txt", "a/b/svn/f", "a/b/c/page.html"]
