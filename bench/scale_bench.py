#!/usr/bin/env python3
"""make scale-bench: files per second through the broker hop with 1, 2 and 4 workers, each doing 50 ms of
work per file, and the CPU the broker and each kind of worker process spend per event.

    publisher:  fc-publish --partitions 8 nats://127.0.0.1:PORT/FCn    (all the events at once)
    worker k:   fc-consume --partitions SHARE | fc-process --jobs 1 --processor 'cmd:sh -c "sleep 0.05; cat ..."'
                | fc-transport --to file://DEST

The 50 ms step stands for a slow destination or an image optimiser: one file at a time per worker, so a
worker does at most 20 files per second and the speed-up with more workers is the broker hop's.  The workers
and fc-publish (a long-running reader behind fc-watch in use) are started first, and the bench waits until
every partition has a pull waiting on the server; the clock runs from the moment the events are handed to
fc-publish until the last file is at the destination.  The events are fc-watch's without its ``hop``: the
bench writes them, and fc-publish would wait (10 s) for that fc-watch to replay them.  A new stream per run,
one nats-server for all, one source tree for all (the same shares in every run with N workers).

Why 2,000 files: a path's partition is a hash, so each worker's share of the files is a random draw, and the
run lasts as long as the busiest worker.  With 400 files the busiest of 4 workers has 110 of them in half the
runs (at best 3.64x, whatever the hop does; 3.42x one run in ten); more partitions do not help (each file still
picks a worker at random), more files do: the spread of a share grows as the square root of the files, its
size as the files.  With 2,000 the busiest has 521 in half the runs (3.84x; 3.72x one run in ten).  The table
says what each run's draw allows ("ideal": files / the busiest worker's files), so the hop's own cost is the
gap between the two.

Also printed, per run: when each worker's first file reached the destination (the fixed latency of the hop:
pull, three stages' start of work, the acknowledgements) and its files per second from its first file to its
last (the steady rate, which the 50 ms caps at 20); the CPU per event of fc-publish, of the broker
(nats-server, from /proc), of fc-consume, fc-process (its own, and the step it runs: sh, sleep, cat) and
fc-transport; and the messages the broker took in per event (its /varz: events, pulls, acknowledgements and
fc-consume's "in progress" signs for every message it holds, every third of the ack wait).

    bench/scale_bench.py [--files 2000] [--workers 1,2,4] [--delay 0.05]
    bench/scale_bench.py --workers 1,4,1,4      # interleaved rounds on a loaded machine; medians at the end
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from tests.servers.process import ServerProcess, children, free_port  # noqa: E402

from fileconveyor.delivery.nats_hop import consumer_name, partition_of  # noqa: E402

BIN = ROOT / "bin"
PARTITIONS = 8
KINDS = ("fc-consume", "fc-process", "step", "fc-transport")  # a worker's processes


def cpu_times(pid: int) -> tuple[float, float]:
    """(own, reaped children's) user + system CPU seconds of a live process (clock ticks from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def shares(workers: int) -> list[list[int]]:
    per = PARTITIONS // workers
    return [list(range(k * per, (k + 1) * per)) for k in range(workers)]


def kind_of(pid: int) -> str | None:
    """Which part of a worker ``pid`` is: an fc stage, the step fc-process runs, or the bash that wires them."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for kind in ("fc-consume", "fc-process", "fc-transport"):
        if any(a.endswith(kind.encode()) for a in argv[:2]):
            return kind
    return None if argv[0].endswith(b"bash") else "step"


def workers_cpu(shells: list[subprocess.Popen[bytes]]) -> dict[int, tuple[str, float, float]]:
    """pid -> (kind, own CPU, reaped children's CPU) of every process of the workers."""
    out = {}
    for p in shells:
        for pid in children(p.pid):
            try:
                kind = kind_of(pid)
                if kind is not None:
                    out[pid] = (kind, *cpu_times(pid))
            except (OSError, IndexError, ValueError):
                pass  # a step that ended between the listing and the reading: its parent counts it
    return out


def cpu_by_kind(before: dict[int, tuple[str, float, float]], after: dict[int, tuple[str, float, float]]) -> dict:
    """CPU seconds per kind between two looks; fc-process's reaped children are its step (sh, sleep, cat)."""
    total = dict.fromkeys(KINDS, 0.0)
    for pid, (kind, own, reaped) in after.items():
        _, own0, reaped0 = before.get(pid, (kind, 0.0, 0.0))
        total[kind] += own - own0
        if kind == "fc-process":
            total["step"] += reaped - reaped0
    return total


def messages_in(monitor: int) -> int:
    """Messages the server has taken in from its clients since it started (its monitoring endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=10) as f:
        return int(json.load(f)["in_msgs"])


def ready(url: str, deadline: float, procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until the stream is made and every partition's consumer has a pull waiting on the server."""
    import nats

    server, _, stream = url.rpartition("/")

    async def waiting() -> int:
        nc = await nats.connect(server)
        try:
            js = nc.jetstream()
            n = 0
            for k in range(PARTITIONS):
                try:
                    n += (await js.consumer_info(stream, consumer_name(stream, k))).num_waiting > 0
                except Exception:  # not made yet
                    pass
            return n
        finally:
            await nc.close()

    while asyncio.run(waiting()) < PARTITIONS:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the workers did not start pulling")
        time.sleep(0.2)


class Arrivals(threading.Thread):
    """When each file appeared at the destination (looked at every 10 ms: fc-transport keeps the source's mtime)."""

    def __init__(self, dest: Path):
        super().__init__(daemon=True)
        self.dest, self.seen, self.stopping = dest, {}, False

    def run(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            with os.scandir(self.dest) as it:
                for e in it:
                    if e.name not in self.seen and not e.name.startswith("."):
                        self.seen[e.name] = now
            time.sleep(0.01)


def run(work: Path, src: Path, url: str, workers: int, files: int, delay: float, consume: list[str]) -> dict:
    dest = work / "dest"
    dest.mkdir(parents=True)
    scanned = subprocess.run(
        [sys.executable, str(BIN / "fc-watch"), "--scan-once", "--state", str(work / "watch.db"), str(src)],
        capture_output=True,
        check=True,
    ).stdout
    # fc-watch's hop taken off: the bench writes the lines, not fc-watch, and fc-publish would wait (10 s) for
    # that fc-watch to replay them before taking lines of a writer that is not the one writing its input
    evs = [json.loads(line) for line in scanned.splitlines()]
    events = b"".join(json.dumps({k: v for k, v in ev.items() if k != "hop"}).encode() + b"\n" for ev in evs)
    owner = {p: k for k, share in enumerate(shares(workers)) for p in share}
    worker_of = {ev["rel"]: owner[partition_of(os.fsencode(ev["path"]), PARTITIONS)] for ev in evs}
    step = f'cmd:sh -c "sleep {delay}; cat \\"$1\\"" sh {{in}}'
    shells: list[subprocess.Popen[bytes]] = []
    publisher: subprocess.Popen[bytes] | None = None
    arrivals = Arrivals(dest)
    try:  # whatever fails (the workers never pulling, fc-publish failing), nothing of this run is left running
        for k, share in enumerate(shares(workers)):
            st = work / f"w{k}"
            st.mkdir()
            q, part = shlex.join, ",".join(map(str, share))
            script = (
                f"{q([sys.executable, str(BIN / 'fc-consume'), '-q', *consume, '--partitions', part])}"
                f" --state {st}/c.db {url}"
                f" | {q([sys.executable, str(BIN / 'fc-process'), '-q', '--jobs', '1', '--processor', step])}"
                f" --state {st}/p.db"
                f" | {q([sys.executable, str(BIN / 'fc-transport'), '-q', '--to', f'file://{dest}'])} --state {st}/t.db"
                f" > /dev/null 2>{st}/err"
            )
            shells.append(subprocess.Popen(["bash", "-c", script], start_new_session=True))
        # fc-publish is a long-running reader behind fc-watch: started, connected and the stream made before the clock
        publisher = subprocess.Popen(
            [
                sys.executable,
                str(BIN / "fc-publish"),
                "-q",
                "--partitions",
                str(PARTITIONS),
                "--state",
                str(work / "pub.db"),
                url,
            ],
            stdin=subprocess.PIPE,
            stderr=(work / "publish.err").open("wb"),
        )
        ready(url, time.monotonic() + 120, [*shells, publisher])
        cpu_before = workers_cpu(shells)  # their start-up is not the events' cost
        publish_before = sum(cpu_times(publisher.pid))
        arrivals.start()
        t0 = time.monotonic()
        assert publisher.stdin is not None
        publisher.stdin.write(events)
        publisher.stdin.close()
        _, status, usage = os.wait4(publisher.pid, 0)  # its CPU, which /proc no longer has once it is reaped
        publisher.returncode = os.waitstatus_to_exitcode(status)
        published = time.monotonic() - t0
        if publisher.returncode != 0:
            raise RuntimeError(f"fc-publish failed: see {work}/publish.err")
        cpu_publish = usage.ru_utime + usage.ru_stime - publish_before
        while len(arrivals.seen) < files:
            time.sleep(0.02)
            if any(p.poll() is not None for p in shells) or time.monotonic() - t0 > 60 + files * delay * 4:
                raise RuntimeError(f"workers ended or too slow: see {work}/w*/err")
        elapsed = max(arrivals.seen.values()) - t0
        cpu = cpu_by_kind(cpu_before, workers_cpu(shells))
    finally:
        arrivals.stopping = True
        if publisher is not None and publisher.returncode is None:
            publisher.kill()
            publisher.wait()
        for p in shells:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in shells:
            p.wait(30)
    per_worker = []
    for k in range(workers):
        times = sorted(t - t0 for name, t in arrivals.seen.items() if worker_of.get(name) == k)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        per_worker.append({"files": len(times), "first": times[0] if times else 0.0, "rate": rate})
    cpu["fc-publish"] = cpu_publish
    return {"elapsed": elapsed, "published": published, "cpu": cpu, "workers": per_worker}


def table(rows: list[tuple[int, dict]], files: int, delay: float) -> None:
    """The runs as a Markdown table; with several runs of one number of workers, their medians after it."""
    ones = [files / r["elapsed"] for w, r in rows if w == 1]
    base = statistics.median(ones) if ones else None
    print(
        f"{files} files, {PARTITIONS} partitions, {delay * 1e3:g} ms per file; speed-up: against the median "
        "1-worker run"
    )
    print(
        "ideal: what the busiest worker's share allows; CPU per event: fc-publish, the broker, then each worker process"
    )
    print()
    print(
        "| workers | files/s | speed-up | ideal (busiest) | first file | steady files/s per worker | publish | "
        "fc-publish | broker | fc-consume | fc-process | step (sh) | fc-transport | broker msgs in/event | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for workers, r in rows:
        rate = files / r["elapsed"]
        w, c = r["workers"], r["cpu"]
        busiest = max(x["files"] for x in w)
        cpu = [c["fc-publish"], r["broker_cpu"], *(c[k] for k in KINDS)]
        print(
            f"| {workers} | {rate:.1f} | {f'{rate / base:.2f}x' if base else '-'} | "
            f"{files / busiest:.2f}x ({busiest}) | "
            f"{max(x['first'] for x in w):.2f} s | {min(x['rate'] for x in w):.1f}-{max(x['rate'] for x in w):.1f} | "
            f"{r['published']:.2f} s | "
            + " | ".join(f"{x / files * 1e3:.2f} ms" for x in cpu)
            + f" | {r['broker_msgs'] / files:.1f} | {r['load']:.1f} |"
        )
    counts = [w for w, _ in rows]
    if len(set(counts)) < len(counts):
        print()
        for workers in sorted(set(counts)):
            rates = [files / r["elapsed"] for w, r in rows if w == workers]
            median = statistics.median(rates)
            print(f"{workers} worker(s): median {median:.1f} files/s of {len(rates)} runs", end="")
            print(f", {median / base:.2f}x" if base else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--workers", default="1,2,4", help="one run per number, in this order (e.g. 1,4,1,4)")
    p.add_argument("--delay", type=float, default=0.05, help="seconds of work per file in each worker")
    p.add_argument("--work", type=Path)
    p.add_argument("--max-pending", type=int, help="fc-consume --max-pending (default: fc-consume's)")
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    if any(w < 1 or PARTITIONS % w for w in counts):
        p.error(f"--workers: each a divisor of the {PARTITIONS} partitions")
    work = args.work or Path(tempfile.mkdtemp(prefix="fc-scale-bench-"))
    port = free_port()
    store = work / "nats-store"
    store.mkdir(parents=True, exist_ok=True)
    monitor = free_port()  # the server's /varz: the messages it took in (events, acknowledgements, "in progress")
    argv = ["nats-server", "-js", "-sd", str(store), "-p", str(port), "-a", "127.0.0.1", "-m", str(monitor)]
    server = ServerProcess("nats-server", argv, port, work / "nats-server.log")
    server.start()
    assert server.proc is not None
    # one source for every run: the same paths, so the same partitions and shares in each run with N workers
    src = work / "src"
    src.mkdir()
    for i in range(args.files):
        (src / f"f{i:05d}.txt").write_text(f"file {i}\n")
    rows = []
    print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    try:
        for n, workers in enumerate(counts):
            broker_before, msgs_before = sum(cpu_times(server.proc.pid)), messages_in(monitor)
            url = f"nats://127.0.0.1:{port}/FC{n}"
            consume = ["--max-pending", str(args.max_pending)] if args.max_pending else []
            r = run(work / f"run{n}-{workers}w", src, url, workers, args.files, args.delay, consume)
            r["broker_cpu"] = sum(cpu_times(server.proc.pid)) - broker_before
            r["broker_msgs"] = messages_in(monitor) - msgs_before
            r["load"] = os.getloadavg()[0]
            rows.append((workers, r))
            w = r["workers"]
            print(
                f"{workers} worker(s): {args.files / r['elapsed']:.1f} files/s; publish {r['published']:.2f} s; "
                f"files per worker "
                f"{'/'.join(str(x['files']) for x in w)}; first file at "
                f"{'/'.join(format(x['first'], '.2f') for x in w)} s; steady "
                f"{'/'.join(format(x['rate'], '.1f') for x in w)} files/s; load {r['load']:.1f}",
                file=sys.stderr,
            )
    finally:
        server.kill()
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    table(rows, args.files, args.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
