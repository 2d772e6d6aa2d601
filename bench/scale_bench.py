#!/usr/bin/env python3
"""make scale-bench: files per second through the broker hop with 1, 2 and 4 workers, each doing 50 ms of
work per file, and the CPU the broker and the workers spend per event.

    publisher:  fc-publish --partitions 8 nats://127.0.0.1:PORT/FCn    (all the events at once)
    worker k:   fc-consume --partitions SHARE | fc-process --jobs 1 --processor 'cmd:sh -c "sleep 0.05; cat ..."'
                | fc-transport --to file://DEST

The 50 ms step stands for a slow destination or an image optimiser: one file at a time per worker, so a
worker does at most 20 files per second and the speed-up with more workers is the broker hop's.  The workers
are started (and idle) before the events are published; the clock runs from the publish until the last file
is at the destination.  A new stream per run, one nats-server for all.

    bench/scale_bench.py [--files 400] [--workers 1,2,4] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from tests.servers.process import ServerProcess, free_port  # noqa: E402

BIN = ROOT / "bin"
PARTITIONS = 8


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its reaped children (clock ticks from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def shares(workers: int) -> list[str]:
    per = PARTITIONS // workers
    return [",".join(str(p) for p in range(k * per, (k + 1) * per)) for k in range(workers)]


def run(work: Path, url: str, workers: int, files: int, delay: float) -> dict[str, float]:
    src, dest = work / "src", work / "dest"
    src.mkdir(parents=True)
    dest.mkdir()
    for i in range(files):
        (src / f"f{i:05d}.txt").write_text(f"file {i}\n")
    events = subprocess.run(
        [sys.executable, str(BIN / "fc-watch"), "--scan-once", "--state", str(work / "watch.db"), str(src)],
        capture_output=True,
        check=True,
    ).stdout
    step = f'cmd:sh -c "sleep {delay}; cat \\"$1\\"" sh {{in}}'
    shells = []
    for k, share in enumerate(shares(workers)):
        st = work / f"w{k}"
        st.mkdir()
        q = shlex.join
        script = (
            f"{q([sys.executable, str(BIN / 'fc-consume'), '-q', '--partitions', share, '--state', f'{st}/c.db', url])}"
            f" | {q([sys.executable, str(BIN / 'fc-process'), '-q', '--jobs', '1', '--processor', step])}"
            f" --state {st}/p.db"
            f" | {q([sys.executable, str(BIN / 'fc-transport'), '-q', '--to', f'file://{dest}'])} --state {st}/t.db"
            f" > /dev/null 2>{st}/err"
        )
        shells.append(subprocess.Popen(["bash", "-c", script], start_new_session=True))
    time.sleep(3.0)  # every worker started, connected and idle
    start_cpu = _workers_cpu(shells)  # their start-up is not the events' cost
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, str(BIN / "fc-publish"), "-q", "--partitions", str(PARTITIONS), url],
        input=events,
        check=True,
    )
    published = time.monotonic() - t0
    while sum(1 for _ in dest.iterdir()) < files:
        time.sleep(0.05)
        dead = [p for p in shells if p.poll() is not None]
        if dead or time.monotonic() - t0 > 60 + files * delay * 2:
            for p in shells:
                os.killpg(p.pid, signal.SIGTERM)
            raise RuntimeError(f"workers ended or too slow: see {work}/w*/err")
    elapsed = time.monotonic() - t0
    worker_cpu = _workers_cpu(shells) - start_cpu
    for p in shells:
        os.killpg(p.pid, signal.SIGTERM)
    for p in shells:
        p.wait(30)
    return {"elapsed": elapsed, "published": published, "worker_cpu": worker_cpu}


def _workers_cpu(shells: list[subprocess.Popen[bytes]]) -> float:
    total = 0.0
    for p in shells:
        for pid in _tree(p.pid):
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
    return total


def _tree(pid: int) -> list[int]:
    out = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.extend(_tree(int(entry.name)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=400)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--delay", type=float, default=0.05, help="seconds of work per file in each worker")
    p.add_argument("--work", type=Path)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fc-scale-bench-"))
    port = free_port()
    store = work / "nats-store"
    store.mkdir(parents=True, exist_ok=True)
    argv = ["nats-server", "-js", "-sd", str(store), "-p", str(port), "-a", "127.0.0.1"]
    server = ServerProcess("nats-server", argv, port, work / "nats-server.log")
    server.start()
    assert server.proc is not None
    rows = []
    try:
        for n, workers in enumerate(int(w) for w in args.workers.split(",")):
            broker_before = cpu_seconds(server.proc.pid)
            r = run(work / f"run{workers}", f"nats://127.0.0.1:{port}/FC{n}", workers, args.files, args.delay)
            r["broker_cpu"] = cpu_seconds(server.proc.pid) - broker_before
            rows.append((workers, r))
            print(f"{workers} worker(s): {args.files / r['elapsed']:.1f} files/s", file=sys.stderr)
    finally:
        server.kill()
    base = args.files / rows[0][1]["elapsed"]
    head = f"| workers | files/s | speed-up | publish of {args.files} events | broker CPU/event | workers' CPU/event |"
    print(head)
    print("|---|---|---|---|---|---|")
    for workers, r in rows:
        rate = args.files / r["elapsed"]
        print(
            f"| {workers} | {rate:.1f} | {rate / base:.2f}x | {r['published']:.2f} s | "
            f"{r['broker_cpu'] / args.files * 1e3:.2f} ms | {r['worker_cpu'] / args.files * 1e3:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
