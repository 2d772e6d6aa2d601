#!/usr/bin/env python3
"""fc-watch benchmark: fc-watch against find (the syscall floor), watchman and inotifywait.

Run by `make bench`.  One run measures, on one generated tree (default: 1,000,000
small files in 100,000 directories):

1. fc-watch --scan-once with an up-to-date state (nothing changed)  target <= 1.5x find
2. fc-watch --scan-once with an empty state (every file emitted)    target <= 3x find
3. live mode: until watches are set and the catch-up scan is done,
   against watchman's crawl and inotifywait -r                      target < watchman, peak RSS < 150 MB
4. latency from a writer's close() to the event on stdout (--settle 0),
   against inotifywait -e close_write                               (reported side by side)
5. fc-watch --scan-once peak RSS with 1/10 of the tree in state against all of it
                                                                    target: no growth with the state
and, for reference, 1. and 2. with --jobs 1 (fc-watch scans with one worker per core).

Each timed measurement runs warm (one untimed find over the tree first, so every
tool reads inodes from the cache; the page cache cannot be dropped reliably here)
and is repeated --repeat times; the median is reported, with every run listed.
Peak memory is the measured process's own peak RSS (ru_maxrss from wait4, or VmHWM)
and, as fc-watch forks scan workers, the peak of the summed RSS of its process tree.

Before each measurement it waits (up to --quiet-wait seconds) for other work on the
machine to stop, and reports for each figure how much CPU other work took anyway.
fc-watch runs from a copy of lib/ and bin/ taken at start (or exported from
--commit REV), so edits to the checkout during a run cannot mix versions.

The tree lives under --workdir (default: $TMPDIR/fc-watch-bench, about 4.5 GB at
full size), never in the repository; it is reused while its marker file says it
is complete, and removed only with --remove-tree.  Results:
bench/results/watch-<date>.md (and stdout).  A peer tool that is missing is an
error, never a silent skip.

Smoke run (a minute): python3 bench/watch_bench.py --files 20000 --dirs 2000 --latency-files 100
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import multiprocessing
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import CpuMeter, rss_of

REPO = Path(__file__).resolve().parent.parent
FC_WATCH = [sys.executable, str(REPO / "bin" / "fc-watch")]  # run() points it at a snapshot (snapshot_code)
RESULTS_DIR = REPO / "bench" / "results"
MB = 1024 * 1024
PEERS = {
    "find": "findutils",
    "watchman": "watchman",
    "inotifywait": "inotify-tools",
}
PHASES = ("scan", "live", "latency", "memory")
MAX_WATCHES_FILE = "/proc/sys/fs/inotify/max_user_watches"
USERNS_WATCHES_FILE = "/proc/sys/user/max_inotify_watches"
FANOUT = 1000  # leaf directories per top-level directory of the generated tree
TARGET_RSS_MB = 150


class BenchError(Exception):
    """A failure that ends the benchmark with a clear message (and status 1)."""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- processes ------------------------------------------------------------------------
#
# Every child runs in a session of its own, so a timeout or the final cleanup can
# kill it with whatever it started, and is recorded so nothing outlives the run.

_children: list[subprocess.Popen[bytes]] = []


def spawn(cmd: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
    kw.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(list(cmd), start_new_session=True, **kw)  # type: ignore[call-overload]
    _children.append(proc)
    return proc


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


SAMPLE_EVERY = 0.02  # seconds between memory samples of a running child


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (fc-watch forks scan workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


class Sampler:
    """Samples, on a thread, a child's own peak RSS and the summed RSS of its process tree.

    The sum counts pages that forked workers still share with their parent once
    per process: an upper bound of what the tree holds (exact PSS costs ~1 ms a read
    from smaps_rollup, too much to take every few milliseconds on two cores).
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.own = 0  # VmHWM of the process itself
        self.total = 0  # peak of the summed VmRSS of the process and its descendants
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        total = 0
        for p in descendants(self.pid):
            rss, hwm = rss_of(p)
            total += rss
            if p == self.pid:
                self.own = max(self.own, hwm)
        self.total = max(self.total, total)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(5)


QUIET = 0.05  # share of the machine's CPU others may use before a measurement starts
quiet_wait = 120.0  # seconds to wait for that at most (--quiet-wait)


def wait_quiet() -> None:
    """Wait until the machine is nearly idle before a measurement (other work skews it).

    Gives up after ``quiet_wait`` seconds and measures anyway: the report shows
    each figure's other load, so a skewed figure is visible, not hidden.
    """
    deadline = time.monotonic() + quiet_wait
    while True:
        meter = CpuMeter()
        time.sleep(0.5)
        share = meter.other_share()
        if share <= QUIET:
            return
        if time.monotonic() > deadline:
            log(f"  the machine is still busy ({share:.0%} of its CPU used by others): measuring anyway")
            return


@dataclass
class Ended:
    code: int  # exit code, -N for signal N
    maxrss: int  # ru_maxrss from wait4, bytes
    exact: bool  # maxrss is the child's own peak (see reap)
    at: float  # monotonic time the process ended


def reap(proc: subprocess.Popen[bytes], timeout: float, what: str) -> Ended:
    """Wait for ``proc`` to end.

    A pidfd wakes us the moment the child exits (no polling error in the wall time).
    wait4's ru_maxrss counts the memory of the process that called exec, this
    benchmark, as the child's until exec (Linux carries the old mm's high-water
    mark over), so it is the child's own peak only when above this process's peak.
    """
    fd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        ended = time.monotonic()
        if not ready:
            kill_group(proc)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError(f"{what}: still running after {timeout:g}s, killed (raise --timeout?)")
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        os.close(fd)
    proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss = usage.ru_maxrss * 1024
    return Ended(proc.returncode, maxrss, maxrss > rss_of(os.getpid())[1], ended)


def stop(proc: subprocess.Popen[bytes], timeout: float, what: str) -> Ended:
    """SIGTERM a long-running child and reap it."""
    kill_group(proc, signal.SIGTERM)
    return reap(proc, timeout, what)


def kill_leftovers() -> None:
    for proc in _children:
        if proc.returncode is None and proc.poll() is None:
            kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait(5)


class LineWatcher:
    """Reads a child's pipe on a thread, keeps the lines, and notes when one holds a marker.

    The child can never block on a full pipe, and the time a marker is seen is taken
    as the line is read, not when the main thread gets round to it.
    """

    def __init__(self, stream: object, marker: str | None):
        self.lines: list[str] = []
        self.marker = marker
        self.seen_at: float | None = None
        self.seen = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if self.marker and self.seen_at is None and self.marker in line:
                self.seen_at = time.monotonic()
                self.seen.set()

    def text(self, last: int = 20) -> str:
        return "\n".join(self.lines[-last:])

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)


# -- measurements ---------------------------------------------------------------------


@dataclass
class Run:
    wall: float  # seconds
    rss: int  # peak RSS of the process itself, bytes
    total: int  # peak of the summed RSS of the process and its descendants, bytes
    exact: bool = True  # False: rss is the last VmHWM sample, not the kernel's figure at exit
    other: float = 0.0  # share of the machine's CPU that other work took meanwhile (CpuMeter)


@dataclass
class Series:
    """Repeated measurements of one command."""

    label: str
    command: str
    runs: list[Run] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    # Peaks: the largest of the runs, not the median: a peak is what a machine must hold.
    @property
    def rss(self) -> int:
        return max(r.rss for r in self.runs)

    @property
    def total(self) -> int:
        return max(r.total for r in self.runs)

    def rss_text(self) -> str:
        """Peak RSS in MB; "~" when a run's figure is a VmHWM sample (see measure)."""
        if self.rss == 0:
            return "n/a"  # ended before its first sample
        return ("" if all(r.exact for r in self.runs) else "~") + f"{self.rss / MB:.1f}"

    def total_text(self) -> str:
        return f"{self.total / MB:.1f}" if self.total else "n/a"

    def other_text(self) -> str:
        return f"{max(r.other for r in self.runs) * 100:.0f}%"

    def all_walls(self) -> str:
        return ", ".join(f"{r.wall:.2f}" for r in self.runs)


def measure(
    cmd: Sequence[str],
    timeout: float,
    what: str,
    env: dict[str, str] | None = None,
    ok: Sequence[int] = (0,),
) -> tuple[Run, str]:
    """Run ``cmd`` to its end, stdout to /dev/null: (wall time and peak memory, stderr).

    The process's own peak RSS is the kernel's ru_maxrss when that is exact (see
    reap), else the last VmHWM sample: exact but for growth in its last
    SAMPLE_EVERY seconds.
    """
    wait_quiet()
    with tempfile.TemporaryFile() as err:
        meter = CpuMeter()
        t0 = time.monotonic()
        proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        sampler = Sampler(proc.pid)
        try:
            end = reap(proc, timeout, what)
        finally:
            sampler.finish()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if end.code not in ok:
        raise BenchError(f"{what}: exit status {end.code}\n$ {shlex.join(cmd)}\n{stderr[-3000:]}")
    own = end.maxrss if end.exact else sampler.own
    return Run(end.at - t0, own, max(own, sampler.total), end.exact, meter.other_share()), stderr


def measure_until(
    cmd: Sequence[str],
    marker: str,
    timeout: float,
    what: str,
    env: dict[str, str] | None = None,
    fail_markers: Sequence[str] = (),
) -> tuple[Run, str]:
    """Start a long-running ``cmd``; wall time and peak memory until ``marker`` shows on its stderr."""
    wait_quiet()
    meter = CpuMeter()
    t0 = time.monotonic()
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    sampler = Sampler(proc.pid)
    watcher = LineWatcher(proc.stderr, marker)
    deadline = t0 + timeout
    try:
        while not watcher.seen.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                kill_group(proc)
                watcher.join()
                why = f"exited with status {proc.returncode}" if proc.returncode is not None else "timed out"
                raise BenchError(f"{what}: {why} before {marker!r}\n$ {shlex.join(cmd)}\n{watcher.text()}")
        # Read while it runs, VmHWM is the process's own peak so far: exact.
        sampler.sample()
    finally:
        sampler.finish()
    assert watcher.seen_at is not None
    stop(proc, 120, what)
    watcher.join()
    proc.stderr.close()  # type: ignore[union-attr]
    stderr = "\n".join(watcher.lines)
    for bad in fail_markers:
        if bad in stderr:
            raise BenchError(f"{what}: {bad!r} on stderr, the measurement is not valid\n{watcher.text()}")
    run = Run(watcher.seen_at - t0, sampler.own, max(sampler.own, sampler.total), other=meter.other_share())
    return run, stderr


def repeat(label: str, cmd: Sequence[str], n: int, one: Callable[[], Run]) -> Series:
    series = Series(label, shown(cmd))
    for i in range(n):
        run = one()
        series.runs.append(run)
        log(
            f"  {label} run {i + 1}/{n}: {run.wall:.2f}s, "
            f"peak RSS {run.rss / MB:.1f} MB, all processes {run.total / MB:.1f} MB"
        )
    return series


# -- the tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeSpec:
    files: int
    dirs: int

    @property
    def groups(self) -> int:
        return max(1, round(self.dirs / (FANOUT + 1)))

    @property
    def leaves(self) -> int:
        return self.dirs - self.groups

    def name(self) -> str:
        return f"tree-{self.files}f-{self.dirs}d"

    def leaf_counts(self) -> list[list[int]]:
        """Files in each leaf directory, grouped by top-level directory."""
        per, extra = divmod(self.files, self.leaves)
        counts = [per + (1 if i < extra else 0) for i in range(self.leaves)]
        size = -(-self.leaves // self.groups)
        return [counts[g * size : (g + 1) * size] for g in range(self.groups)]


# Small files of 1 to 256 bytes: content is irrelevant to every tool measured, but
# empty files would let a file system cheat on allocation.
_PAYLOAD = bytes(range(32, 127)) * 3


def _make_group(job: tuple[str, int, list[int]]) -> int:
    """Create top-level directory number ``g`` with its leaves and files (a pool worker)."""
    root, g, counts = job
    top = f"{root}/g{g:03d}"
    os.mkdir(top)
    gfd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    made = 0
    try:
        for j, n in enumerate(counts):
            name = f"d{j:04d}"
            os.mkdir(name, dir_fd=gfd)
            # Opening relative to the directory's fd saves the kernel a path walk per file.
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=gfd)
            try:
                for k in range(n):
                    fd = os.open(f"f{k:03d}.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
                    os.write(fd, _PAYLOAD[: 1 + (g * 131 + j * 31 + k * 17) % 256])
                    os.close(fd)
                made += n
            finally:
                os.close(dfd)
    finally:
        os.close(gfd)
    return made


def _worker_signals() -> None:
    # The pool stops its workers with SIGTERM: let them die of it quietly, not
    # through the benchmark's own handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ensure_tree(workdir: Path, spec: TreeSpec, regenerate: bool) -> tuple[Path, str]:
    """The tree for ``spec`` under ``workdir``, made unless a complete one is there."""
    if spec.dirs < 2 or spec.files < 1:
        raise BenchError("--dirs must be at least 2 and --files at least 1")
    root = workdir / spec.name()
    marker = workdir / (spec.name() + ".done")
    if marker.exists() and root.is_dir() and not regenerate:
        return root, f"reused, made {marker.read_text().strip()}"
    # No marker: a generation was interrupted, or --regenerate.  Start over.
    marker.unlink(missing_ok=True)
    if root.exists():
        log(f"removing incomplete or old tree {root}")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log(f"generating {spec.files:,} files in {spec.dirs:,} directories under {root}")
    t0 = time.monotonic()
    jobs = [(str(root), g, c) for g, c in enumerate(spec.leaf_counts())]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1, initializer=_worker_signals) as pool:
        made = sum(pool.imap_unordered(_make_group, jobs))
    os.sync()  # write back now, not during a measurement
    took = time.monotonic() - t0
    if made != spec.files:
        raise BenchError(f"generated {made} files, expected {spec.files}")
    marker.write_text(f"{dt.datetime.now():%Y-%m-%d %H:%M} in {took:.0f}s\n")
    return root, f"generated in {took:.0f}s"


# -- the tools ------------------------------------------------------------------------


def snapshot_code(dest: Path, commit: str | None) -> str:
    """Copy lib/ and bin/fc-watch, from the work tree or from ``commit``, to ``dest``
    and measure that copy from now on.

    The checkout may be edited while a run of many minutes goes on; every figure of
    one run must come from the same code.  Returns a digest of the copy.
    """
    if commit:
        dest.mkdir(parents=True)
        tar = git(["archive", "--format=tar", commit, "lib", "bin/fc-watch"], text=False)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            # Our own repository's archive; the "data" filter where this Python has it.
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            t.extractall(dest, **kw)  # type: ignore[arg-type]
    else:
        shutil.copytree(REPO / "lib", dest / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (dest / "bin").mkdir()
        shutil.copy2(REPO / "bin" / "fc-watch", dest / "bin" / "fc-watch")
    digest = hashlib.sha256()
    for f in sorted(dest.rglob("*")):
        if f.is_file():
            digest.update(str(f.relative_to(dest)).encode() + b"\0" + f.read_bytes())
    FC_WATCH[:] = [sys.executable, str(dest / "bin" / "fc-watch")]
    return digest.hexdigest()[:12]


def shown(cmd: Sequence[str]) -> str:
    """A command as the report shows it: fc-watch by its name in the checkout."""
    if list(cmd[:2]) == FC_WATCH:
        return shlex.join(["bin/fc-watch", *cmd[2:]])
    return shlex.join(cmd)


def check_peers() -> dict[str, str]:
    """Version of every peer tool; a missing one is an error, never a skip."""
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in PEERS.items() if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            "missing peer tools: " + ", ".join(missing) + "\ninstall them with: scripts/install-system-deps bench"
        )
    versions = {
        "find": _first_line(["find", "--version"]),
        "watchman": "watchman " + _first_line(["watchman", "--version"]),
        "inotifywait": _first_line(["inotifywait", "--help"]),
        "python": f"Python {platform.python_version()}",
    }
    try:
        import inotify_simple  # noqa: F401
    except ImportError:
        raise BenchError(f"{sys.executable} cannot import inotify_simple (fc-watch's dependency): make deps") from None
    return versions


def _first_line(cmd: Sequence[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def check_inotify(dirs: int) -> int:
    """The inotify watch limit in force; every tool needs one watch per directory."""
    limits = [_read_int(MAX_WATCHES_FILE)]
    # Since Linux 5.11 a user namespace has its own limit, which may be the lower one.
    if Path(USERNS_WATCHES_FILE).exists():
        limits.append(_read_int(USERNS_WATCHES_FILE))
    limit = min(limits)
    if limit < dirs + 100:
        raise BenchError(
            f"the inotify watch limit is {limit}, the tree has {dirs} directories: raise it with "
            f"sysctl fs.inotify.max_user_watches={max(2 * dirs, 524288)} (and user.max_inotify_watches)"
        )
    return limit


def _read_int(path: str) -> int:
    return int(Path(path).read_text().strip())


def find_cmd(root: Path) -> list[str]:
    # What any scanner must do at least: list every directory, stat every file.
    return ["find", str(root), "-printf", r"%p %s %T@\n"]


def fc_env(ctx: Context, state_dir: Path) -> dict[str, str]:
    # FC_STATE_DIR too, so nothing lands in the user's own state directory; no
    # bytecode written into the checkout (compiling lib/ costs ~20 ms a start).
    return {**os.environ, "FC_STATE_DIR": str(state_dir), "PYTHONDONTWRITEBYTECODE": "1"}


def forget_state(state: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(state) + suffix).unlink(missing_ok=True)


_SUMMARY = re.compile(r"(\d+) files scanned, (\d+) created, (\d+) modified, (\d+) deleted")


def check_summary(stderr: str, what: str, files: int, created: int) -> None:
    """fc-watch -v ends with a summary: make sure the run did the work it was meant to."""
    m = _SUMMARY.search(stderr)
    if m is None:
        raise BenchError(f"{what}: no summary line on stderr:\n{stderr[-2000:]}")
    got = tuple(int(x) for x in m.groups())
    if got != (files, created, 0, 0):
        raise BenchError(f"{what}: expected {files} scanned and {created} created, got {m.group(0)}")


class Watchman:
    """A watchman server of our own: own socket, state, log and pid files, no saved state."""

    def __init__(self, tmp: Path, timeout: float):
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.timeout = timeout
        self.sock = tmp / "sock"
        self.logfile = tmp / "log"
        self.opts = [
            f"--sockname={self.sock}",
            f"--statefile={tmp / 'state'}",
            f"--logfile={self.logfile}",
            f"--pidfile={tmp / 'pid'}",
            "--no-save-state",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.logfile.unlink(missing_ok=True)
        self.proc = spawn(
            ["watchman", "--foreground", *self.opts], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client(["version"], timeout=5)
                return
            except BenchError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"watchman server did not start; its log:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def client(self, args: Sequence[str], stdin: str | None = None, timeout: float | None = None) -> dict[str, object]:
        cmd = ["watchman", "--no-spawn", "--no-local", "--no-pretty", *self.opts, *args]
        try:
            out = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=timeout or self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"watchman {' '.join(args)}: no answer in {timeout or self.timeout:.0f}s") from None
        try:
            answer = json.loads(out.stdout)
        except ValueError:
            raise BenchError(f"watchman {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}") from None
        if out.returncode != 0 or "error" in answer:
            raise BenchError(f"watchman {' '.join(args)}: {answer.get('error', out.stderr.strip())}")
        return answer

    def crawl(self, root: Path) -> tuple[float, float | None]:
        """Watch ``root`` and wait until a query is answered: (wall time, crawl time in its log)."""
        t0 = time.monotonic()
        self.client(["watch", str(root)])
        # A query waits for the initial crawl (it syncs on a cookie file that the
        # crawl must see first), so its answer marks the crawl's end.
        query = ["query", str(root), {"expression": ["false"], "fields": ["name"]}]
        self.client(["-j"], stdin=json.dumps(query))
        wall = time.monotonic() - t0
        return wall, self._logged_crawl()

    def _logged_crawl(self) -> float | None:
        m = re.search(r'"elapsed_time": ([0-9.e-]+)[^\n]*"description": "full-crawl"', self.log_tail(200))
        return float(m.group(1)) if m else None

    def stop(self, polite: bool = True) -> None:
        """Shut the server down: asked to (``polite``), else or if that fails, killed."""
        if self.proc is None or self.proc.returncode is not None:
            return
        if polite:
            with contextlib.suppress(BenchError):
                self.client(["shutdown-server"], timeout=10)
                reap(self.proc, 10, "watchman shutdown")
                return
        # Interrupted, or it did not go: a server in mid-crawl can take minutes to obey.
        kill_group(self.proc)
        with contextlib.suppress(BenchError):
            reap(self.proc, 10, "watchman kill")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- the phases -----------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path  # this run's scratch directory (state files, watchman), removed at the end
    timeout: float
    root: Path | None = None
    tree_note: str = ""
    results: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    latency: dict[str, tuple[str, list[float], float]] = field(default_factory=dict)  # (command, samples, other)
    memory: list[tuple[TreeSpec, Series, Series, Series]] = field(default_factory=list)  # tree, find, first, scan
    crawl_logged: list[float] = field(default_factory=list)


def warm(root: Path, timeout: float) -> None:
    """One untimed pass so every measurement finds the inodes and directories cached."""
    measure(find_cmd(root), timeout, "warm-up find")


def run_find(ctx: Context, root: Path, key: str) -> Series:
    cmd = find_cmd(root)
    ctx.results[key] = repeat("find", cmd, ctx.args.repeat, lambda: measure(cmd, ctx.timeout, "find")[0])
    return ctx.results[key]


def scan_cmd(state: Path, root: Path, extra: Sequence[str] = ()) -> list[str]:
    return [*FC_WATCH, "--scan-once", "-v", "--no-progress", *extra, "--state", str(state), str(root)]


def first_run(
    ctx: Context, root: Path, state: Path, files: int, n: int, label: str, extra: Sequence[str] = ()
) -> Series:
    """fc-watch --scan-once on an empty state: every file is emitted as created."""
    cmd = scan_cmd(state, root, extra)

    def one() -> Run:
        forget_state(state)
        run, err = measure(cmd, ctx.timeout, label, fc_env(ctx, state.parent))
        check_summary(err, label, files, files)
        return run

    return repeat(label, cmd, n, one)


def up_to_date(ctx: Context, root: Path, state: Path, files: int, label: str, extra: Sequence[str] = ()) -> Series:
    """fc-watch --scan-once with a state that matches the tree: nothing to emit."""
    cmd = scan_cmd(state, root, extra)

    def one() -> Run:
        run, err = measure(cmd, ctx.timeout, label, fc_env(ctx, state.parent))
        check_summary(err, label, files, 0)
        return run

    return repeat(label, cmd, ctx.args.repeat, one)


def phase_scan(ctx: Context, state: Path) -> None:
    assert ctx.root is not None
    files = ctx.args.files
    ctx.results["first"] = first_run(ctx, ctx.root, state, files, ctx.args.repeat, "fc-watch first run")
    # The state the last first run left is the up-to-date state of every later phase.
    ctx.results["scan"] = up_to_date(ctx, ctx.root, state, files, "fc-watch --scan-once")
    # For reference: the same with one process, to show what the scan workers buy and cost.
    one = ctx.tmp / "state-jobs1" / "watch.db"
    j1 = ["--jobs", "1"]
    ctx.results["first-j1"] = first_run(ctx, ctx.root, one, files, ctx.args.repeat, "first run, --jobs 1", j1)
    ctx.results["scan-j1"] = up_to_date(ctx, ctx.root, one, files, "--scan-once, --jobs 1", j1)
    forget_state(one)


def phase_live(ctx: Context, state: Path) -> None:
    assert ctx.root is not None
    root, n = ctx.root, ctx.args.repeat
    if not state.exists():
        log("building the up-to-date state for live mode")
        first_run(ctx, root, state, ctx.args.files, 1, "fc-watch first run (state for live mode)")
    fc = [*FC_WATCH, "-v", "--no-progress", "--state", str(state), str(root)]
    env = fc_env(ctx, state.parent)
    # A watch limit reached would make fc-watch poll and inotifywait fail: not a valid figure.
    ctx.results["live"] = repeat(
        "fc-watch live until ready",
        fc,
        n,
        lambda: measure_until(fc, "ready:", ctx.timeout, "fc-watch live", env, ("watch limit",))[0],
    )
    iw = ["inotifywait", "-r", "-m", str(root)]
    ready = "Watches established."
    ctx.results["inotifywait"] = repeat(
        "inotifywait -r",
        iw,
        n,
        lambda: measure_until(iw, ready, ctx.timeout, "inotifywait -r", None, ("upper limit",))[0],
    )
    ctx.results["watchman"] = repeat("watchman crawl", ["watchman", "watch", str(root)], n, lambda: watchman_once(ctx))
    if ctx.crawl_logged:
        logged = ", ".join(f"{t:.2f}" for t in ctx.crawl_logged)
        ctx.notes.append(
            f"watchman's own log timed its full crawl at {logged} s (the wall time adds the client round trips)."
        )


def watchman_once(ctx: Context) -> Run:
    assert ctx.root is not None
    wm = Watchman(ctx.tmp / "watchman", ctx.timeout)
    wait_quiet()
    meter = CpuMeter()
    done = False
    try:
        wm.start()
        assert wm.proc is not None
        sampler = Sampler(wm.proc.pid)
        try:
            wall, logged = wm.crawl(ctx.root)
            sampler.sample()  # VmHWM of the running server: its exact peak so far
        finally:
            sampler.finish()
        done = True
    except BenchError as exc:
        raise BenchError(f"{exc}\nwatchman log:\n{wm.log_tail()}") from None
    finally:
        wm.stop(polite=done)
    if logged is not None:
        ctx.crawl_logged.append(logged)
    return Run(wall, sampler.own, max(sampler.own, sampler.total), other=meter.other_share())


def phase_latency(ctx: Context) -> None:
    latdir = ctx.tmp / "latency"
    n = ctx.args.latency_files
    state = ctx.tmp / "state-latency" / "watch.db"
    fc = [*FC_WATCH, "-v", "--no-progress", "--settle", "0", "--state", str(state), str(latdir)]
    iw = ["inotifywait", "-m", "-e", "close_write", "--format", "%w%f", str(latdir)]
    for key, cmd, marker, env in (
        ("fc-watch", fc, "ready:", fc_env(ctx, state.parent)),
        ("inotifywait", iw, "Watches established.", None),
    ):
        # The same, empty directory for each watcher: neither sees the other's files.
        shutil.rmtree(latdir, ignore_errors=True)
        latdir.mkdir(parents=True)
        forget_state(state)
        log(f"latency: {key}, {n} files")
        wait_quiet()
        meter = CpuMeter()
        samples = latency_run(cmd, latdir, n, ctx.args.latency_gap, marker, env, key)
        ctx.latency[key] = (shown(cmd), samples, meter.other_share())


def latency_run(
    cmd: Sequence[str], latdir: Path, n: int, gap: float, marker: str, env: dict[str, str] | None, what: str
) -> list[float]:
    """Seconds from each close() by this process to the line naming the file on ``cmd``'s stdout.

    One file at a time, each once the previous one was reported and a short pause
    later, so a sample is the watcher's reaction time, not time spent in a queue.
    """
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    errors = LineWatcher(proc.stderr, marker)
    try:
        if not errors.seen.wait(60):
            raise BenchError(f"latency, {what}: not ready in 60s\n{errors.text()}")
        out = proc.stdout.fileno()  # type: ignore[union-attr]
        os.set_blocking(out, False)
        buf = b""
        samples: list[float] = []
        for i in range(n):
            name = f"f{i:05d}.dat".encode()
            fd = os.open(bytes(latdir) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, _PAYLOAD[:100])
            os.close(fd)
            closed = time.monotonic()
            buf, arrived = _read_until(out, buf, name, closed + 10)
            if arrived is None:
                raise BenchError(f"latency, {what}: no line for {name.decode()} within 10s\n{errors.text()}")
            samples.append(arrived - closed)
            time.sleep(gap)
        return samples
    finally:
        kill_group(proc, signal.SIGTERM)
        with contextlib.suppress(BenchError):
            reap(proc, 30, f"latency, {what}")
        errors.join()


def _read_until(fd: int, buf: bytes, name: bytes, deadline: float) -> tuple[bytes, float | None]:
    """Read ``fd`` until a complete line holding ``name``: (what is left after it, when it arrived)."""
    arrived = time.monotonic()  # lines already buffered arrived before this call
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if name in line:
                return buf, arrived
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, None
        select.select([fd], [], [], left)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        arrived = time.monotonic()
        if not chunk:
            return buf, None
        buf += chunk


def phase_memory(ctx: Context, state_big: Path) -> None:
    """Peak RSS of fc-watch with a tenth of the tree in state (files and directories) against all of it."""
    assert ctx.root is not None
    small = TreeSpec(max(1, ctx.args.files // 10), max(2, ctx.args.dirs // 10))
    root, note = ensure_tree(Path(ctx.args.workdir), small, ctx.args.regenerate)
    ctx.notes.append(f"memory phase: small tree {root} ({small.files:,} files, {small.dirs:,} directories), {note}.")
    warm(root, ctx.timeout)
    state = ctx.tmp / "state-small" / "watch.db"
    rows = []
    for spec, tree, st in ((small, root, state), (TreeSpec(ctx.args.files, ctx.args.dirs), ctx.root, state_big)):
        r = ctx.results if spec.files == ctx.args.files and st.exists() else {}
        # The full-size figures of the scan phase serve again when it ran.
        fnd = r.get("find") or run_find(ctx, tree, f"find-{spec.files}")
        first = r.get("first") or first_run(
            ctx, tree, st, spec.files, ctx.args.repeat, f"fc-watch first run, {spec.files:,} files"
        )
        scan = r.get("scan") or up_to_date(ctx, tree, st, spec.files, f"fc-watch --scan-once, {spec.files:,} in state")
        rows.append((spec, fnd, first, scan))
    ctx.memory = rows


# -- the report -----------------------------------------------------------------------


def machine_facts(
    workdir: Path, versions: dict[str, str], watches: int, digest: str, commit: str | None
) -> list[tuple[str, str]]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    fs_text = file_system(workdir)
    return [
        (
            "fc-watch",
            f"{code_version(commit)}; lib/ and bin/ copied at start (sha256 {digest}); "
            f"default --jobs ({os.cpu_count()})",
        ),
        ("cores", f"{os.cpu_count()} ({cpu})"),
        ("memory", f"{mem:.0f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("file system of the tree", fs_text),
        ("inotify watch limit (fs.inotify.max_user_watches, user.max_inotify_watches)", f"{watches:,}"),
        *versions.items(),
    ]


def git(args: Sequence[str], text: bool = True) -> Any:
    """Output of a read-only git command in the repository; BenchError when it fails."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=text, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"git {' '.join(args)}: {exc}") from None
    if out.returncode != 0:
        err = out.stderr if text else out.stderr.decode(errors="replace")
        raise BenchError(f"git {' '.join(args)}: {err.strip()}")
    return out.stdout


def code_version(commit: str | None) -> str:
    """The code measured: a commit, or the work tree and whether lib/ or bin/ differ from HEAD."""
    try:
        head = git(["rev-parse", "--short", f"{commit or 'HEAD'}^{{commit}}"]).strip()
        dirty = "" if commit else git(["status", "--porcelain", "--", "lib", "bin"]).strip()
    except BenchError:
        if commit:
            raise
        return "work tree (version unknown: not a git checkout?)"
    if commit:
        return f"commit {head} (exported with git archive)"
    return f"work tree at commit {head}" + (" plus uncommitted changes in lib/ or bin/" if dirty else "")


def file_system(path: Path) -> str:
    """Type, device and mount options of the file system holding ``path``."""
    try:
        out = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split(None, 2)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no findmnt)"
    return f"{out[0]} on {out[1]} ({out[2].strip()})" if len(out) == 3 else "unknown"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def verdict(value: float, limit: float, unit: str = "x") -> str:
    fmt = f"{value:.2f}{unit}"
    return f"yes ({fmt})" if value <= limit else f"**no** ({fmt}, {value / limit:.2f}x over the target)"


def targets(ctx: Context) -> list[tuple[str, str, bool]]:
    """(target, outcome, met) for every target whose figures were measured."""
    r = ctx.results
    out: list[tuple[str, str, bool]] = []
    if "find" in r and "scan" in r:
        v = r["scan"].wall / r["find"].wall
        out.append(("--scan-once, up to date: wall <= 1.5x find", verdict(v, 1.5), v <= 1.5))
    if "find" in r and "first" in r:
        v = r["first"].wall / r["find"].wall
        out.append(("first run: wall <= 3x find", verdict(v, 3.0), v <= 3.0))
    if "live" in r and "watchman" in r:
        v = r["live"].wall / r["watchman"].wall
        out.append(("live: ready faster than watchman's crawl", verdict(v, 1.0, "x watchman"), v < 1.0))
    if "live" in r:
        v = r["live"].total / MB
        goal = f"live: fc-watch peak RSS (all processes) < {TARGET_RSS_MB} MB"
        out.append((goal, verdict(v, TARGET_RSS_MB, " MB"), v < TARGET_RSS_MB))
    if len(ctx.memory) == 2:
        (t1, _, first1, s1), (t2, _, first2, s2) = ctx.memory
        n1, n2 = t1.files, t2.files
        # "Does not grow": allow 10% of noise for a tenfold state.
        for what, small, large in (
            ("--scan-once, up to date", s1, s2),
            ("first run", first1, first2),
        ):
            for scope, a, b in (("process", small.rss, large.rss), ("all processes", small.total, large.total)):
                v = b / a if a else float("inf")
                goal = f"{what}: peak RSS ({scope}) flat from {n1:,} to {n2:,} files (<= 1.1x)"
                out.append((goal, verdict(v, 1.1), v <= 1.1))
    return out


def render(ctx: Context, facts: list[tuple[str, str]], command: str, started: dt.datetime) -> str:
    a, r = ctx.args, ctx.results
    lines = [
        f"# fc-watch benchmark, {started:%Y-%m-%d %H:%M}",
        "",
        f"Command: `{command}`  ",
        f"Tree: {a.files:,} files in {a.dirs:,} directories ({ctx.tree_note}).  ",
        f"Method: warm (one untimed `find` over the tree first); each timed figure is the median of {a.repeat} runs "
        "(all runs listed).  Peaks are the largest of the runs.  *Process*: the measured process's own peak RSS, "
        "the kernel's ru_maxrss from wait4 when above this benchmark's own peak (below, it may be the benchmark's, "
        f"which exec carries over), else the last VmHWM sample, taken every {SAMPLE_EVERY * 1000:g} ms (marked ~); "
        "for live processes VmHWM at ready.  *All processes*: the peak of the summed VmRSS of the process and its "
        f"descendants (fc-watch forks scan workers), sampled every {SAMPLE_EVERY * 1000:g} ms; pages that workers "
        "share with their parent count once per process, so it is an upper bound.  Memory ratios use it.  "
        "*Other load*: the largest share of the machine's CPU that work other than the benchmark and its children "
        "took during a run (kernel threads included); above a few percent, figures are skewed.",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in facts),
        "",
    ]
    base = r.get("find")
    rows = [
        ("find (floor)", "find"),
        ("1. --scan-once, up to date", "scan"),
        ("2. first run, every file emitted", "first"),
        ("1. --scan-once, up to date, --jobs 1 (reference)", "scan-j1"),
        ("2. first run, --jobs 1 (reference)", "first-j1"),
        ("3. fc-watch live, until `ready:`", "live"),
        ("3. watchman crawl (watch + first query)", "watchman"),
        ("3. inotifywait -r -m, until `Watches established.`", "inotifywait"),
    ]
    if any(k in r for _, k in rows):
        lines += [
            "## Scans and crawls",
            "",
            "| measurement | wall s (median) | runs s | peak RSS MB, process | peak RSS MB, all processes "
            "| wall / find | memory / find | wall / watchman | other load |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        wm = r.get("watchman")
        for label, key in rows:
            if key not in r:
                continue
            s = r[key]
            vs_find = ratio(s.wall, base.wall) if base else "n/a"
            # A peak read before find got going (tiny trees) makes no base for a ratio.
            mem_vs_find = ratio(s.total, base.total) if base and base.total >= MB else "n/a"
            vs_watchman = ratio(s.wall, wm.wall) if wm and key in ("live", "watchman", "inotifywait") else ""
            lines.append(
                f"| {label} | {s.wall:.2f} | {s.all_walls()} | {s.rss_text()} | {s.total_text()} | "
                f"{vs_find} | {mem_vs_find} | {vs_watchman} | {s.other_text()} |"
            )
        lines += ["", "Commands:", ""]
        lines += [f"- {label}: `{r[key].command}`" for label, key in rows if key in r]
        lines.append("")
    if ctx.latency:
        lines += latency_table(ctx)
    if ctx.memory:
        lines += memory_table(ctx)
    notes = list(ctx.notes)
    others = [run.other for s in r.values() for run in s.runs] + [o for *_, o in ctx.latency.values()]
    busiest = max(others, default=0.0)
    if busiest > QUIET:
        notes.append(
            f"**Other work used up to {busiest:.0%} of the machine's CPU during some measurements** (column "
            "*other load*): those figures are skewed; rerun on a quiet machine."
        )
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    met = targets(ctx)
    if met:
        lines += ["## Targets", "", "| target | met |", "| --- | --- |", *(f"| {t} | {o} |" for t, o, _ in met), ""]
    return "\n".join(lines)


def latency_table(ctx: Context) -> list[str]:
    lines = [
        f"## Latency, close() to the line on stdout ({ctx.args.latency_files} files, one at a time, "
        f"{ctx.args.latency_gap * 1000:g} ms apart)",
        "",
        "| watcher | median ms | p99 ms | max ms | other load | command |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, (cmd, samples, other) in ctx.latency.items():
        s = sorted(samples)
        p99 = s[max(0, -(-99 * len(s) // 100) - 1)]  # nearest rank
        lines.append(
            f"| {key} | {statistics.median(s) * 1000:.2f} | {p99 * 1000:.2f} | {s[-1] * 1000:.2f} | "
            f"{other * 100:.0f}% | `{cmd}` |"
        )
    return [*lines, ""]


def memory_table(ctx: Context) -> list[str]:
    lines = [
        "## Memory against the number of files in state",
        "",
        "Peak RSS in MB as process / all processes (see Method).",
        "",
        "| files (directories) in state | find s | first run s | first run peak RSS | --scan-once s "
        "| --scan-once peak RSS | --scan-once µs per file |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for spec, fnd, first, scan in ctx.memory:
        n = spec.files
        lines.append(
            f"| {n:,} ({spec.dirs:,}) | {fnd.wall:.2f} | {first.wall:.2f} | {first.rss_text()} / "
            f"{first.total_text()} | {scan.wall:.2f} | {scan.rss_text()} / {scan.total_text()} | "
            f"{scan.wall / n * 1e6:.2f} |"
        )
    return [*lines, ""]


# -- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=1_000_000, help="files in the tree (default 1,000,000)")
    p.add_argument("--dirs", type=int, default=100_000, help="directories in the tree (default 100,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each timed measurement; the median is reported")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fc-watch-bench",
        help="where trees are made and kept between runs (default: $TMPDIR/fc-watch-bench)",
    )
    p.add_argument("--regenerate", action="store_true", help="make the trees again even if complete ones exist")
    p.add_argument("--remove-tree", action="store_true", help="remove the generated trees at the end")
    p.add_argument("--latency-files", type=int, default=1000, help="files written for the latency phase (default 1000)")
    p.add_argument("--latency-gap", type=float, default=0.01, help="pause between latency samples, s (default 0.01)")
    p.add_argument(
        "--only", default=",".join(PHASES), help=f"phases to run, comma-separated (default {','.join(PHASES)})"
    )
    p.add_argument("--timeout", type=float, help="limit for any one command, s (default: 120 + 1 ms per file)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="directory for watch-<date>.md")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    p.add_argument("--commit", metavar="REV", help="measure fc-watch as of this commit (default: the work tree)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each measurement, wait up to this long (s) for other work on the machine to stop (default 120)",
    )
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {', '.join(sorted(unknown))} (choose from {', '.join(PHASES)})")
    if args.repeat < 1 or args.files < 1 or args.dirs < 2 or args.latency_files < 1:
        p.error("--repeat, --files and --latency-files must be at least 1, --dirs at least 2")
    if args.workdir.resolve().is_relative_to(REPO):
        p.error("--workdir must be outside the repository")
    return args


@contextlib.contextmanager
def scratch(workdir: Path) -> Iterator[Path]:
    """This run's scratch directory; removed, with every child still running, at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    try:
        yield tmp
    finally:
        kill_leftovers()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    global quiet_wait
    quiet_wait = args.quiet_wait
    started = dt.datetime.now()
    command = shlex.join(["python3", "bench/watch_bench.py", *sys.argv[1:]])
    versions = check_peers()
    watches = check_inotify(args.dirs)
    timeout = args.timeout or 120 + args.files / 1000
    with scratch(args.workdir) as tmp:
        digest = snapshot_code(tmp / "code", args.commit)
        facts = machine_facts(args.workdir, versions, watches, digest, args.commit)
        ctx = Context(args, tmp, timeout)
        ctx.root, ctx.tree_note = ensure_tree(args.workdir, TreeSpec(args.files, args.dirs), args.regenerate)
        log(f"tree {ctx.root}: {ctx.tree_note}; warming up with find")
        warm(ctx.root, timeout)
        state = tmp / "state" / "watch.db"
        if "scan" in args.phases or "memory" in args.phases:
            run_find(ctx, ctx.root, "find")
        if "scan" in args.phases:
            phase_scan(ctx, state)
        if "live" in args.phases:
            phase_live(ctx, state)
        if "latency" in args.phases:
            phase_latency(ctx)
        if "memory" in args.phases:
            phase_memory(ctx, state)
    if args.remove_tree:
        remove_trees(args)
    report = render(ctx, facts, command, started)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"watch-{started:%Y-%m-%d-%H%M}.md"
    out.write_text(report + "\n")
    print(report)
    log(f"written to {out}")
    missed = [t for t, _, ok in targets(ctx) if not ok]
    return 1 if args.strict and missed else 0


def remove_trees(args: argparse.Namespace) -> None:
    for spec in (TreeSpec(args.files, args.dirs), TreeSpec(max(1, args.files // 10), max(2, args.dirs // 10))):
        (args.workdir / (spec.name() + ".done")).unlink(missing_ok=True)
        shutil.rmtree(args.workdir / spec.name(), ignore_errors=True)
    with contextlib.suppress(OSError):
        args.workdir.rmdir()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    # SIGTERM ends the run like Ctrl-C: through the finally blocks that kill children.
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(args)
    except BenchError as exc:
        print(f"watch_bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("watch_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()


if __name__ == "__main__":
    sys.exit(main())
