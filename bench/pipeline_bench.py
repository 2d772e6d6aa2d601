#!/usr/bin/env python3
"""The whole pipeline, as users run it, against the tools they would pick instead (issue 18).

Not run by `make test`.  One run measures, side by side and interleaved (round 1 of every tool, then round 2, ...):

- "fc 3-stage": ``fc-watch --scan-once SRC | fc-transport --to URL | fc-record --db DB``;
- "fc 5-stage": ``fc-watch --scan-once SRC | fc-filter --extensions bin | fc-process --chain
  filename.SpacesToUnderscores | fc-transport --to URL | fc-record --db DB``;
- "floor 3-stage" and "floor 5-stage" (local folder only): bench/floor.py, the same shapes in Python with nothing
  but the work itself (no durability, no checks): what Python and five processes cost, apart from what fc adds;
- the peers where they apply: ``rclone copy --transfers 4`` (every destination; SFTP with disable_hashcheck),
  lsyncd ``default.rsync`` (local folder: from its start until the trees are equal), ``scp -r`` (SFTP) and
  ``aws s3 sync`` (S3, the AWS CLI from .cache/awscli as `make bench` installs it);

each from a fresh state (empty destination, new state directory and database), on the sets "small" (10,000 files
of 4 KiB in 100 directories) and "large" (20 files of 20 MiB), to a local folder, SFTP (OpenSSH's sshd on
127.0.0.1), FTP (pyftpdlib, tests/servers/ftp_main.py) and S3 (moto, tests/servers/s3.py).  Reported per tool:
files/s and MB/s (median of --repeat), CPU seconds per file (user + sys of every process of the run, from wait4,
so children reaped by a stage count too), and peak RSS (the sum of each process's own peak, VmHWM sampled every
20 ms); the ratio of each fc shape to the best peer (above 1: fc is faster).  Every run is checked: the destination
must hold every file with its size.

The live mode: ``fc-watch --settle 0 SRC | fc-transport --to file://DEST | fc-record`` while this process writes
--live-files files 50 ms apart; latency runs from the writer's close() to the file complete at its final name on the
destination (inotify on the destination: IN_MOVED_TO or IN_CLOSE_WRITE with the full size), beside lsyncd
``default.direct`` with delay 0.  Median, p99 and max.

--profile DIR runs the 5-stage shape on the small set to a local folder once more, each stage under py-spy (every
thread, 250 samples/s) or cProfile (main thread only), and prints where each stage spends its time.

Results: a table on stdout and bench/results/pipeline-<date>.json.  A missing peer is an error, never a skip
(scripts/install-system-deps bench installs rclone, lsyncd, rsync and OpenSSH).

Quick run (under a minute): .venv/bin/python bench/pipeline_bench.py --quick
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import platform
import pstats
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

import floor
from benchlib import (
    BUCKET,
    PY,
    ROOT,
    CpuMeter,
    ServerProcess,
    Sshd,
    bucket_listing,
    check_copy,
    clear_set_aside,
    free_port,
    make_tree,
    need,
    results_file,
    rss_of,
    s3srv,
    set_aside,
    start_s3,
)

CONNECTIONS = 4
FTP_USER, FTP_PASSWORD = "bench", "bench-pass"
S3_SECRET = "bench-secret"
SAMPLE_EVERY = 0.02


# -- one measured run: a pipeline of processes --------------------------------------------------


@dataclass
class Measure:
    wall: float  # start of the first process to the end of the last (or: until the trees were equal)
    cpu: float  # user + sys of every process, children they reaped included
    rss: int  # sum of each process's own peak RSS, bytes
    stages: list[dict] = field(default_factory=list)  # per process: its command name, cpu, rss


class PeakSampler:
    """Samples the VmHWM of the given processes and their descendants (fc-watch's scan workers, rsync) on a
    thread: wait4's ru_maxrss would also count this benchmark's own memory at the fork."""

    def __init__(self, pids: Sequence[int]):
        self.roots = list(pids)
        self.peak: dict[int, int] = {}
        self.owner: dict[int, int] = {}  # pid -> index of the stage it belongs to
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for i, root in enumerate(self.roots):
                todo = [root]
                while todo:
                    pid = todo.pop()
                    hwm = rss_of(pid)[1]
                    if hwm:
                        self.peak[pid] = max(self.peak.get(pid, 0), hwm)
                        self.owner[pid] = i
                    try:
                        with open(f"/proc/{pid}/task/{pid}/children") as f:
                            todo += [int(c) for c in f.read().split()]
                    except OSError:
                        pass
            if self._stop.wait(SAMPLE_EVERY):
                return

    def per_stage(self) -> list[int]:
        self._stop.set()
        self._thread.join(5)
        out = [0] * len(self.roots)
        for pid, hwm in self.peak.items():
            out[self.owner[pid]] += hwm
        return out


def spawn_chain(stages: Sequence[Sequence[str]], env: dict[str, str], log: Path) -> list[subprocess.Popen[bytes]]:
    """Start ``stages`` connected by pipes, as a shell would; the last one's stdout goes to /dev/null."""
    procs: list[subprocess.Popen[bytes]] = []
    prev = None
    with open(log, "ab") as err:
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            p = subprocess.Popen(
                list(argv),
                stdin=prev if prev is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=err,
                env=env,
                start_new_session=True,
            )
            if prev is not None:
                prev.close()
            prev = p.stdout
            procs.append(p)
    return procs


def reap(procs: Sequence[subprocess.Popen[bytes]], sampler: PeakSampler, timeout: float) -> tuple[list, float]:
    """wait4 every process (killing all at ``timeout``): their rusages and the time the last one ended."""
    timer = threading.Timer(timeout, lambda: [kill(p) for p in procs])
    timer.start()
    usages = []
    try:
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            usages.append(ru)
    finally:
        timer.cancel()
    return usages, time.perf_counter()


def become_subreaper() -> None:
    """Processes a tool leaves in the background (fc-transport's ssh master, ControlPersist) become this
    benchmark's children when their parent ends, not init's: reap_adopted counts their CPU in the run's."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def children() -> set[int]:
    """This process's children (the servers, a run's processes, adopted ones), exited or not."""
    out: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                out |= {int(c) for c in f.read().split()}
        except OSError:
            pass
    return out


def reap_adopted(pids: set[int], wait: float = 10.0) -> list[dict]:
    """Rows for background processes a run left (adopted: become_subreaper), each reaped once it ends (killed
    after ``wait`` seconds): their CPU is the tool's too."""
    rows = []
    deadline = time.monotonic() + wait
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            name = "?"
        while True:
            got, _, ru = os.wait4(pid, os.WNOHANG)
            if got:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, _, ru = os.wait4(pid, 0)
                break
            time.sleep(0.01)
        rows.append({"cmd": f"{name} (background)", "cpu": ru.ru_utime + ru.ru_stime, "rss": 0})
    return rows


def kill(p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def measure(
    stages: Sequence[Sequence[str]], env: dict[str, str], log: Path, until: Callable[[], None] | None = None
) -> Measure:
    """Run one pipeline to its end; with ``until`` (a daemon such as lsyncd), until ``until()`` returns, then
    stop it with SIGTERM."""
    started = time.perf_counter()
    before = children()
    procs = spawn_chain(stages, env, log)
    sampler = PeakSampler([p.pid for p in procs])
    if until is not None:
        try:
            until()
        finally:
            ended = time.perf_counter()
            for p in procs:
                kill(p, signal.SIGTERM)
        usages, _ = reap(procs, sampler, 60)
    else:
        usages, ended = reap(procs, sampler, 3600)
        bad = [(p.args, p.returncode) for p in procs if p.returncode != 0]
        if bad:
            raise SystemExit(f"failed: {bad}\n{log.read_text()[-3000:]}")
    peaks = sampler.per_stage()
    rows = [
        {"cmd": Path(p.args[p.args[0] == PY]).name, "cpu": ru.ru_utime + ru.ru_stime, "rss": peak}  # type: ignore[index]
        for p, ru, peak in zip(procs, usages, peaks, strict=True)
    ]
    rows += reap_adopted(children() - before - {p.pid for p in procs})
    return Measure(ended - started, sum(r["cpu"] for r in rows), sum(peaks), rows)


# -- destinations ------------------------------------------------------------------------------


class Destination:
    """Where a run copies to: its fc-transport URL, rclone's remote, a fresh empty place, and a check."""

    def __init__(self, where: str, work: Path, env: dict[str, str]):
        self.where, self.work, self.env = where, work, env
        self.server: ServerProcess | None = None
        self.sshd: Sshd | None = None
        self.files = work / f"dest-{where}"  # the destination as seen on the local file system
        self.run_no = 0
        if where == "sftp":
            self.sshd = Sshd(work)
        elif where == "ftp":
            root = work / "ftp-home"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            self.files = root / "dest"
            argv = [PY, str(ROOT / "tests" / "servers" / "ftp_main.py"), str(free_port()), str(root)]
            self.server = ServerProcess("ftp", argv, int(argv[2]), work / "ftpd.log")
            self.server.env |= {"FTP_USER": FTP_USER, "FTP_PASSWORD": FTP_PASSWORD}
            self.server.start()
            self.env["FC_PASSWORD"] = FTP_PASSWORD
            self.rclone_pass = subprocess.run(
                ["rclone", "obscure", FTP_PASSWORD], capture_output=True, text=True, check=True
            ).stdout.strip()
        elif where == "s3":
            self.server = start_s3(work)
            self.endpoint = f"http://127.0.0.1:{self.server.port}"
            self.env |= {
                "AWS_ACCESS_KEY_ID": s3srv.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(work / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "RCLONE_S3_PROVIDER": "Other",
                "RCLONE_S3_ENV_AUTH": "true",
                "RCLONE_S3_ENDPOINT": self.endpoint,
                "RCLONE_S3_NO_CHECK_BUCKET": "true",
                "RCLONE_S3_ACL": "public-read",
            }
            self.env.pop("AWS_CA_BUNDLE", None)
            os.environ.update({k: self.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
            (work / "aws-config").write_text(
                f"[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {CONNECTIONS}\n"
                "  max_queue_size = 10000\n"
            )

    def fresh(self, label: str) -> None:
        """An empty destination for the next run (S3: a new prefix, moto keeps what it stored)."""
        self.run_no += 1
        self.prefix = f"{label.split()[0]}-{label.split()[-1]}-{self.run_no}"
        if self.where != "s3":
            set_aside(self.files, self.work)  # not deleted now: see benchlib.set_aside
        if self.where == "ftp":  # pyftpdlib answers 501 (not 550) for a missing directory: rclone gives up
            self.files.mkdir()

    def fc_url(self) -> str:
        n = CONNECTIONS
        if self.where == "local":
            return f"file://{quote(str(self.files))}?connections={n}"
        if self.where == "sftp":
            s = self.sshd
            assert s is not None
            q = f"key_file={quote(str(s.key))}&known_hosts={quote(str(s.known_hosts))}&agent=no&connections={n}"
            return f"sftp://{s.user}@127.0.0.1:{s.port}{quote(str(self.files))}?{q}"
        if self.where == "ftp":
            assert self.server is not None
            return f"ftp://{FTP_USER}@127.0.0.1:{self.server.port}/dest?connections={n}"
        return f"s3://{BUCKET}/{self.prefix}?endpoint_url={self.endpoint}&connections={n}"

    def rclone_remote(self) -> str:
        if self.where == "local":
            return str(self.files)
        if self.where == "sftp":
            s = self.sshd
            assert s is not None
            return (
                f":sftp,host=127.0.0.1,port={s.port},user={s.user},key_file={s.key},"
                f"known_hosts_file={s.known_hosts},disable_hashcheck=true:{self.files}"
            )
        if self.where == "ftp":
            assert self.server is not None
            return f":ftp,host=127.0.0.1,port={self.server.port},user={FTP_USER},pass={self.rclone_pass}:dest"
        return f":s3:{BUCKET}/{self.prefix}"

    def check(self, tree: Path, count: int, size: int) -> None:
        if self.where == "s3":
            want = sorted((str(p.relative_to(tree)), size) for p in tree.rglob("*.bin"))
            if bucket_listing(self.endpoint, self.prefix) != want:
                raise SystemExit(f"S3: the bucket does not hold all {count} files under {self.prefix}")
        else:
            check_copy(tree, self.files)

    def stop(self) -> None:
        if self.sshd:
            self.sshd.stop()
        if self.server:
            self.server.stop()
        clear_set_aside(self.work)


# -- the tools ---------------------------------------------------------------------------------


def fc(bin_dir: Path, verb: str, *args: str) -> list[str]:
    return [PY, str(bin_dir / f"fc-{verb}"), "-q", *args]


def fc_stages(shape: str, tree: Path, url: str, db: Path, bin_dir: Path = ROOT / "bin") -> list[list[str]]:
    middle = [
        fc(bin_dir, "filter", "--extensions", "bin"),
        fc(bin_dir, "process", "--chain", "filename.SpacesToUnderscores"),
    ]
    return [
        fc(bin_dir, "watch", "--scan-once", str(tree)),
        *(middle if shape == "5" else []),
        fc(bin_dir, "transport", "--to", url),
        fc(bin_dir, "record", "--db", str(db)),
    ]


def lsyncd_config(work: Path, src: Path, dest: Path, mode: str) -> Path:
    """lsyncd's configuration: default.rsync (batch) or default.direct (live), delay 0; its log on stderr."""
    conf = work / f"lsyncd-{mode}.lua"
    conf.write_text(
        f'settings {{ nodaemon = true, logfile = "/dev/stderr", statusFile = "{work}/lsyncd.status",\n'
        f"  insist = true }}\n"
        f'sync {{ default.{mode}, source = "{src}", target = "{dest}", delay = 0 }}\n'
    )
    return conf


LSYNCD_READY = r"Startup of .* finished"  # after its first full sync (default.rsync and default.direct alike)


def wait_for_log(log: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return
        time.sleep(0.01)
    raise SystemExit(f"'{pattern}' not seen in {log} within {timeout}s:\n{log.read_text()[-3000:]}")


def tools_for(where: str, wanted: set[str]) -> list[str]:
    tools = ["fc 3-stage", "fc 5-stage", "rclone"]
    tools += {"local": ["lsyncd", "floor 3-stage", "floor 5-stage"], "sftp": ["scp"], "s3": ["aws"]}.get(where, [])
    # "3-stage" is fc's shape, "floor" both of the floor's, "floor 3-stage" one of them
    return [
        t
        for t in tools
        if not wanted or t in wanted or t.split()[0] in wanted or (t.startswith("fc") and t.split()[-1] in wanted)
    ]


def is_peer(tool: str) -> bool:
    """A tool users would pick instead (the ratios' reference), not fc or the floor."""
    return tool.split()[0] not in ("fc", "floor")


def one_run(tool: str, dest: Destination, tree: Path, count: int, size: int, work: Path, bin_dir: Path) -> Measure:
    dest.fresh(tool)
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    env = {**dest.env, "FC_STATE_DIR": str(state)}
    log = work / f"run-{tool.replace(' ', '-')}.log"
    log.write_bytes(b"")
    until = None
    if tool.startswith("fc"):
        stages = fc_stages(tool.split()[1][0], tree, dest.fc_url(), state / "synced.db", bin_dir)
    elif tool.startswith("floor"):
        stages = floor.argv(tool.split()[1][0], str(tree), str(dest.files), str(state / "floor.db"))
    elif tool == "rclone":
        rclone = ["rclone", "--config", "/dev/null", "copy", "--transfers", str(CONNECTIONS)]
        stages = [[*rclone, "--checkers", str(CONNECTIONS), str(tree), dest.rclone_remote()]]
    elif tool == "scp":
        s = dest.sshd
        assert s is not None
        scp = ["scp", "-q", "-r", "-i", str(s.key), "-P", str(s.port), "-o", f"UserKnownHostsFile={s.known_hosts}"]
        stages = [[*scp, str(tree), f"{s.user}@127.0.0.1:{dest.files}"]]
    elif tool == "aws":
        argv = ["aws", "s3", "sync", "--quiet", "--acl", "public-read", "--endpoint-url", dest.endpoint]
        stages = [[*argv, str(tree), f"s3://{BUCKET}/{dest.prefix}"]]
    else:  # lsyncd: from its start until the trees are equal
        dest.files.mkdir(parents=True)
        stages = [["lsyncd", str(lsyncd_config(work, tree, dest.files, "rsync"))]]

        def until() -> None:
            wait_for_log(log, LSYNCD_READY, 3600)
            while True:  # the trees are equal at once after the startup sync; a walk of them is not cheap
                try:
                    return check_copy(tree, dest.files)
                except SystemExit:
                    time.sleep(0.1)

    m = measure(stages, env, log, until)
    dest.check(tree, count, size)
    return m


# -- live latency ---------------------------------------------------------------------------------

IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80
_libc = ctypes.CDLL(None, use_errno=True)


class Arrivals:
    """When each file became complete at its final name in ``dest`` (inotify, on a thread)."""

    def __init__(self, dest: Path, size: int):
        self.size, self.dest = size, dest
        self.seen: dict[str, float] = {}
        self.fd = _libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or _libc.inotify_add_watch(self.fd, bytes(dest), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            raise SystemExit(f"inotify on {dest}: {os.strerror(ctypes.get_errno())}")
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except OSError:
                return
            now = time.monotonic()
            i = 0
            while i < len(buf):
                _, _, _, n = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16 : i + 16 + n].rstrip(b"\0").decode()
                i += 16 + n
                try:
                    if name not in self.seen and os.stat(self.dest / name).st_size == self.size:
                        self.seen[name] = now
                except OSError:
                    pass

    def wait(self, name: str, timeout: float, look: bool = False) -> bool:
        """Whether ``name`` arrived within ``timeout`` s.  ``look``: also when it is there whole without its event
        having been seen (a tool that first writes the file empty or in part at its final name, then again with
        no event we count: lsyncd's direct mode once did, at the warm-up, and the whole run stopped); its time
        is then when it was found, never earlier than the truth."""
        deadline = time.monotonic() + timeout
        while name not in self.seen:
            if look:
                with contextlib.suppress(OSError):
                    if os.stat(self.dest / name).st_size == self.size:
                        self.seen.setdefault(name, time.monotonic())
                        continue
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        os.close(self.fd)


def live_run(tool: str, work: Path, n: int, gap: float, bin_dir: Path) -> dict:
    src, dest, state = work / "live-src", work / "live-dest", work / "live-state"
    for d in (src, dest, state):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    env = {**os.environ, "FC_STATE_DIR": str(state)}
    log = work / f"live-{tool.split()[0]}.log"
    log.write_bytes(b"")
    if tool == "lsyncd":
        stages = [["lsyncd", str(lsyncd_config(work, src, dest, "direct"))]]
        ready = LSYNCD_READY
    else:
        url = f"file://{quote(str(dest))}"
        stages = [
            [PY, str(bin_dir / "fc-watch"), "-v", "--settle", "0", str(src)],
            fc(bin_dir, "transport", "--to", url),
            fc(bin_dir, "record", "--db", str(state / "synced.db")),
        ]
        ready = "ready:"
    payload = os.urandom(4096)
    arrivals = Arrivals(dest, len(payload))
    procs = spawn_chain(stages, env, log)
    sampler = PeakSampler([p.pid for p in procs])
    lat: list[float] = []
    in_order: list[float] = []
    try:
        wait_for_log(log, ready, 60)
        write = lambda name: _write(src / name, payload)  # noqa: E731
        write("warmup.bin")
        if not arrivals.wait("warmup.bin", 30, look=True):  # (not timed: only that the tool works)
            raise SystemExit(f"live, {tool}: the first file never arrived\n{log.read_text()[-3000:]}")
        closed: dict[str, float] = {}
        t0 = time.monotonic()
        for i in range(n):
            time.sleep(max(0.0, t0 + i * gap - time.monotonic()))
            closed[f"f{i:05d}.bin"] = write(f"f{i:05d}.bin")
        arrivals.wait(f"f{n - 1:05d}.bin", 30)
        time.sleep(0.5)
        missing = [k for k in closed if k not in arrivals.seen]
        if missing and tool != "lsyncd":
            raise SystemExit(f"live, {tool}: {len(missing)} files never arrived\n{log.read_text()[-3000:]}")
        # a peer that misses files (lsyncd's direct mode did: 28 of 1,000 in one run) is reported as it is, its
        # latencies taken over the files that arrived; File Conveyor missing one is a failure of the run
        in_order = [arrivals.seen[k] - closed[k] for k in closed if k in arrivals.seen]  # in the order written
        lat = sorted(in_order)
    finally:
        for p in procs:
            kill(p, signal.SIGTERM)
        reap(procs, sampler, 30)
        sampler.per_stage()
        arrivals.close()
    return {
        "tool": tool,
        "files": n,
        "median_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "max_ms": lat[-1] * 1000,
        "over_50ms": sum(x > 0.05 for x in lat),
        "never_arrived": len(missing),
        "slow": [(i, round(x * 1000, 1)) for i, x in enumerate(in_order) if x > 0.02],  # (file number, ms)
    }


def _write(path: Path, data: bytes) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    return time.monotonic()


# -- profiles ---------------------------------------------------------------------------------------


def profile(work: Path, tree: Path, out: Path, profiler: str, bin_dir: Path = ROOT / "bin") -> None:
    """The 5-stage shape to a local folder, each stage under ``profiler``; a summary per stage on stdout.
    ``bin_dir``: the checkout's commands (--checkout), as the measured runs'."""
    out.mkdir(parents=True, exist_ok=True)
    dest = work / "dest-profile"
    shutil.rmtree(dest, ignore_errors=True)
    state = work / "state-profile"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    stages = fc_stages("5", tree, f"file://{quote(str(dest))}?connections={CONNECTIONS}", state / "synced.db", bin_dir)
    wrapped = []
    for argv in stages:
        verb = Path(argv[1]).name
        if profiler == "py-spy":
            spy = [py_spy(), "record", "-r", "100", "-s", "--format", "raw", "-o", str(out / f"{verb}.txt")]
            wrapped.append([*spy, "--", *argv])
        elif profiler == "strace":  # system calls per stage, counted (strace -c), children and threads included
            wrapped.append([need("strace"), "-f", "-c", "-o", str(out / f"{verb}.strace"), *argv])
        else:
            wrapped.append([argv[0], "-m", "cProfile", "-o", str(out / f"{verb}.prof"), *argv[1:]])
    log = out / "stderr.log"
    log.write_bytes(b"")
    m = measure(wrapped, {**os.environ, "FC_STATE_DIR": str(state)}, log)
    check_copy(tree, dest)
    print(f"profiled run: {m.wall:.2f} s wall, {m.cpu:.2f} s CPU (profilers included); files in {out}")
    for argv in stages:
        verb = Path(argv[1]).name
        if profiler == "py-spy":
            print(summarize_collapsed(out / f"{verb}.txt", verb))
        elif profiler == "strace":
            print(f"== {verb}: system calls\n" + "\n".join((out / f"{verb}.strace").read_text().splitlines()[:14]))
        else:
            print(f"== {verb} (main thread only)")
            pstats.Stats(str(out / f"{verb}.prof")).sort_stats("tottime").print_stats(15)


def py_spy() -> str:
    """py-spy from PATH or next to this Python (pip install py-spy into the venv)."""
    beside = Path(PY).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else need("py-spy"))


# Lines where the runner's threads block (py-spy cannot tell them from work): left out of the summary.
LIB = Path(__file__).resolve().parents[1] / "lib" / "fileconveyor"


def _line_of(func: str, rel: str, code: str) -> str:
    """py-spy's name for the line holding ``code`` in ``rel``, looked up in the source (line numbers move)."""
    path = LIB / rel
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if code in text:
            return f"{func} ({path.name}:{n})"
    print(f"pipeline_bench: warning: {code!r} is no longer in {rel}: its waits count as work", file=sys.stderr)
    return ""


WAITS = {
    _line_of("Workers._run", "delivery/lanes.py", "item = lane.tasks.get()"),
    _line_of("Runner._loop", "delivery/runner.py", "msgs = [self.events.get(timeout=timeout)]"),
    _line_of("Runner._gather", "delivery/runner.py", "time.sleep(min(POLL, left))"),  # gathering a round
    _line_of("read_batches", "delivery/streams.py", "ready = dict(poller.poll())"),  # waiting for input
} - {""}
WAITING = ("Condition.wait (", "Event.wait (", "_PollLikeSelector.select (", "Connection._recv (")


def summarize_collapsed(path: Path, title: str, top: int = 12) -> str:
    """From py-spy's collapsed stacks: the lines that spend the most samples themselves (C calls such as
    json.loads or sqlite3's execute count in the Python line that made them), and the functions that spend the
    most with their callees."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for entry in path.read_text().splitlines():
        stack, _, count = entry.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or _frame(frames[-1], line=True) in WAITS or frames[-1].startswith(WAITING):
            continue  # py-spy takes a thread blocked in C (a queue, poll, a lock) as active: not CPU
        n = int(count)
        total += n
        own[_frame(frames[-1], line=True)] += n
        for f in {_frame(f, line=False) for f in frames}:
            incl[f] += n
    lines = [f"== {title}: {total} samples (on CPU, every thread and child)", "  self%  line"]
    lines += [f"  {100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["  incl%  function"]
    lines += [f"  {100 * n / total:5.1f}  {f}" for f, n in incl.most_common(top + 8)]
    return "\n".join(lines)


def _frame(frame: str, line: bool) -> str:
    """ "fn (/path/to/file.py:12)" as "fn (file.py:12)", or "fn (file.py)" without the line."""
    fn, _, where = frame.partition(" (")
    file, _, lineno = where.rstrip(")").rpartition(":")
    file = file.rsplit("/", 1)[-1] or where.rstrip(")")
    return f"{fn} ({file}:{lineno})" if line and lineno else f"{fn} ({file})"


# -- report ----------------------------------------------------------------------------------------


def table(results: list[dict], ratios: list[dict], live: list[dict]) -> str:
    lines = [
        "| set | to | tool | files/s | MB/s | median s | runs s | CPU s | CPU ms/file | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        runs = ", ".join(f"{t:.2f}" for t in r["walls"])
        lines.append(
            f"| {r['set']} | {r['to']} | {r['tool']} | {_num(r['files_s'])} | {_num(r['mb_s'])} | {r['wall']:.2f} | "
            f"{runs} | {r['cpu']:.2f} | {1000 * r['cpu'] / r['files']:.3f} | {r['rss'] / 2**20:.0f} |"
        )
    if ratios:
        shapes = ["fc 3-stage", "fc 5-stage"]
        shapes += [s for s in ("floor 3-stage", "floor 5-stage") if any(s in r for r in ratios)]
        lines += ["", "| set | to | best peer | " + " | ".join(f"{s} / best" for s in shapes) + " |"]
        lines += ["|---|---|---|" + "---:|" * len(shapes)]
        for r in ratios:  # a shape not run: an empty cell
            cells = " | ".join(f"{r[s]:.2f}" if r.get(s) is not None else "" for s in shapes)
            lines.append(f"| {r['set']} | {r['to']} | {r['best']} | {cells} |")
    if live:
        lines += [
            "",
            "| live (close() to complete at the destination) | files | median ms | p99 ms | max ms | > 50 ms |",
        ]
        lines += ["|---|---:|---:|---:|---:|---:|"]
        for r in live:
            lines.append(
                f"| {r['tool']} | {r['files']} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |"
                f" {r['over_50ms']} |"
            )
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=10_000, help="small files (default 10000, 4 KiB, 100 per directory)")
    p.add_argument("--large", type=int, default=20, help="large files (default 20)")
    p.add_argument("--large-mb", type=int, default=20, help="size of a large file in MiB (default 20)")
    p.add_argument("--sets", default="small,large", help="small, large or both (default)")
    p.add_argument("--to", default="local,sftp,ftp,s3", help="destinations: local,sftp,ftp,s3 (default all)")
    p.add_argument("--tools", default="", help="only these: 3-stage,5-stage,floor,rclone,lsyncd,scp,aws (default all)")
    p.add_argument("--repeat", type=int, default=3, help="rounds, median reported (default 3; 0: no batch runs)")
    p.add_argument("--live-files", type=int, default=1000, help="files of the live mode (default 1000; 0: no live)")
    p.add_argument("--live-gap", type=float, default=0.05, help="seconds between live files (default 0.05)")
    p.add_argument("--profile", type=Path, metavar="DIR", help="also profile each stage of the 5-stage shape")
    p.add_argument("--profiler", choices=("py-spy", "cprofile", "strace"), default="py-spy")
    p.add_argument("--checkout", type=Path, metavar="DIR", help="run the fc shapes from this checkout instead")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1000 small, 3 x 5 MiB, local, 1 round")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fc-pipeline-bench")
    args = p.parse_args()
    become_subreaper()
    if args.quick:
        args.small, args.large, args.large_mb, args.repeat = 1000, 3, 5, 1
        args.live_files, args.to = min(args.live_files, 100), "local"
    tree_tools = {"rclone", "lsyncd", "rsync", "scp", "aws"} & {
        t for w in args.to.split(",") for t in tools_for(w, set())
    }
    if args.live_files or "lsyncd" in tree_tools:
        tree_tools |= {"lsyncd", "rsync"}  # lsyncd runs rsync (default.rsync) or cp (default.direct)
    for tool in sorted(tree_tools):
        need(tool)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = (args.checkout or ROOT) / "bin"
    subprocess.run([PY, "-m", "compileall", "-q", str(bin_dir.parent / "lib")], check=True)
    sets = {
        "small": (work / f"src-small-{args.small}", args.small, 4096, 100),
        "large": (work / f"src-large-{args.large}x{args.large_mb}", args.large, args.large_mb * 2**20, 100),
    }
    for name in args.sets.split(","):
        tree, count, size, per_dir = sets[name]
        make_tree(tree, count, size, per_dir)
    wanted = set(filter(None, args.tools.split(",")))
    meter = CpuMeter()
    results: list[dict] = []
    ratios: list[dict] = []
    for where in args.to.split(",") if args.repeat else []:  # --repeat 0: only the live mode and the profile
        dest = Destination(where, work, dict(os.environ))
        try:
            for name in args.sets.split(","):
                tree, count, size, _ = sets[name]
                tools = tools_for(where, wanted)
                runs: dict[str, list[Measure]] = {t: [] for t in tools}
                for _ in range(args.repeat):  # interleaved: one run of every tool per round
                    for tool in tools:
                        m = one_run(tool, dest, tree, count, size, work, bin_dir)
                        runs[tool].append(m)
                        print(f"  {name:5} {where:5} {tool:11} {m.wall:7.2f} s {m.cpu:6.2f} s CPU", flush=True)
                best_peer = None
                for tool, ms in runs.items():
                    wall = statistics.median(x.wall for x in ms)
                    mid = sorted(ms, key=lambda x: x.wall)[len(ms) // 2]
                    row = {
                        "set": name,
                        "to": where,
                        "tool": tool,
                        "files": count,
                        "bytes": count * size,
                        "wall": wall,
                        "walls": [x.wall for x in ms],
                        "files_s": count / wall,
                        "mb_s": count * size / 1e6 / wall,
                        "cpu": statistics.median(x.cpu for x in ms),
                        "rss": max(x.rss for x in ms),
                        "stages": mid.stages,
                        "runs": [asdict(x) for x in ms],
                    }
                    results.append(row)
                    if is_peer(tool) and (best_peer is None or wall < best_peer["wall"]):
                        best_peer = row
                if best_peer is not None:
                    r = {"set": name, "to": where, "best": f"{best_peer['tool']} {best_peer['files_s']:,.0f} files/s"}
                    for row in results[-len(runs) :]:
                        if not is_peer(row["tool"]):
                            r[row["tool"]] = best_peer["wall"] / row["wall"]
                    ratios.append(r)
        finally:
            dest.stop()
    live = []
    if args.live_files:
        for tool in ("fc 3-stage", "lsyncd"):
            try:
                live.append(live_run(tool, work, args.live_files, args.live_gap, bin_dir))
            except SystemExit as exc:
                if tool == "fc 3-stage":
                    raise  # File Conveyor failing its live run fails the benchmark
                # a peer that fails is reported, and the batch rows measured so far are still written
                print(f"pipeline_bench: warning: live {tool} left out: {exc}", file=sys.stderr, flush=True)
                continue
            print(
                f"  live {tool}: median {live[-1]['median_ms']:.1f} ms, p99 {live[-1]['p99_ms']:.1f} ms,"
                f" max {live[-1]['max_ms']:.1f} ms, over 50 ms {live[-1]['over_50ms']},"
                f" never arrived {live[-1]['never_arrived']}",
                flush=True,
            )
    others = meter.other_share()
    if args.profile:
        profile(work, sets["small"][0], args.profile, args.profiler, bin_dir)
    stamp, out = results_file("pipeline", ".json")
    text = table(results, ratios, live)
    header = (
        f"# pipeline benchmark, {stamp}\n\nCommand: `{' '.join(['bench/pipeline_bench.py', *sys.argv[1:]])}`  \n"
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"other work took {others:.0%} of the machine's CPU meanwhile\n"
    )
    print("\n" + header + "\n" + text)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    facts = {"argv": sys.argv, "machine": machine, "others_cpu_share": others}
    facts["own_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.write_text(json.dumps({**facts, "results": results, "ratios": ratios, "live": live}, indent=1))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
