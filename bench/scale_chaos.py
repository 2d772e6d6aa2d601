#!/usr/bin/env python3
"""make scale-chaos: the broker hop under kill -9, round after round, then check that the destination
converges to exactly the source tree.

    storage:   fc-watch --output FIFO  ->  fc-publish --input FIFO nats://127.0.0.1:PORT/FC
    worker k:  fc-consume --partitions 2k,2k+1 --output FIFO_k  ->  fc-transport --input FIFO_k --to file://DEST

Three workers, six partitions, one real nats-server (-js, its store kept across kills).  The source tree
changes all the time (creations, appends, renames, deletions: tests/durability/chaos.py's Mutator); each round
kills one process with SIGKILL (an fc-consume, an fc-transport, fc-publish, fc-watch, or nats-server itself)
and starts it again, as supervisord would.  After the last round the changes stop and the destination must
equal the source: no file lost, none extra, none with other content.

    bench/scale_chaos.py --rounds 40 --files 2000 [--seed N] [--work DIR]

Prints kills per kind, files at the end, lost / extra / wrong (all must be 0), duplicate uploads, and the time
to converge after the last restart; exit status 1 on a difference."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from tests.durability.chaos import Mutator  # noqa: E402
from tests.servers.process import ServerProcess, free_port  # noqa: E402

BIN = ROOT / "bin"
WORKERS = 3
PARTITIONS = 2 * WORKERS


class Cluster:
    def __init__(self, work: Path):
        self.work = work
        self.src, self.dest, self.state = work / "src", work / "dest", work / "state"
        for d in (self.src, self.dest, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}/FC"
        store = work / "nats-store"
        store.mkdir(exist_ok=True)
        argv = ["nats-server", "-js", "-sd", str(store), "-p", str(self.port), "-a", "127.0.0.1"]
        self.nats = ServerProcess("nats-server", argv, self.port, work / "nats-server.log")
        self.fifos = {"watch": work / "watch.fifo", **{f"w{k}": work / f"w{k}.fifo" for k in range(WORKERS)}}
        for f in self.fifos.values():
            if not f.exists():
                os.mkfifo(f)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def names(self) -> list[str]:
        workers = [f"{kind}{k}" for kind in ("consume", "transport") for k in range(WORKERS)]
        return ["watch", "publish", *workers]

    def command(self, name: str) -> list[str]:
        py, st = sys.executable, self.state
        if name == "watch":
            return [py, str(BIN / "fc-watch"), "-q", "--settle", "0.05", "--state", f"{st}/watch.db",
                    "--output", str(self.fifos["watch"]), str(self.src)]  # fmt: skip
        if name == "publish":
            return [py, str(BIN / "fc-publish"), "-q", "--partitions", str(PARTITIONS), "--timeout", "2",
                    "--state", f"{st}/publish.db", "--input", str(self.fifos["watch"]), self.url]  # fmt: skip
        k = int(name[-1])
        if name.startswith("consume"):
            return [py, str(BIN / "fc-consume"), "-q", "--partitions", f"{2 * k},{2 * k + 1}", "--ack-wait", "3",
                    "--state", f"{st}/consume{k}.db", "--output", str(self.fifos[f"w{k}"]), self.url]  # fmt: skip
        return [py, str(BIN / "fc-transport"), "-q", "--to", f"file://{self.dest}", "--state", f"{st}/transport{k}.db",
                "--input", str(self.fifos[f"w{k}"]), "--output", str(self.work / f"transport{k}.out")]  # fmt: skip

    def start(self, name: str) -> None:
        if name == "nats":
            self.nats.start()
            return
        with (self.work / f"{name}.err").open("ab") as log:
            self.procs[name] = subprocess.Popen(self.command(name), stderr=log, stdin=subprocess.DEVNULL)

    def kill(self, name: str) -> None:
        if name == "nats":
            self.nats.kill()
            return
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self) -> None:
        for name in self.procs:
            self.kill(name)
        self.nats.kill()


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def uploads(work: Path) -> Counter[str]:
    """Per file, how many times a worker's fc-transport uploaded it (from their outputs)."""
    count: Counter[str] = Counter()
    for k in range(WORKERS):
        out = work / f"transport{k}.out"
        if not out.exists():
            continue
        for line in out.read_bytes().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("kind") != "deleted" and ev.get("transported") == "uploaded":
                count[ev.get("rel", ev.get("path"))] += 1
    return count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, help="working directory (default: a new temporary one, kept)")
    p.add_argument("--converge-timeout", type=float, default=300.0)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fc-scale-chaos-"))
    rng = random.Random(args.seed)
    c = Cluster(work)
    mut = Mutator(c.src, rng)
    mut.populate(args.files)
    kills: Counter[str] = Counter()
    started = time.monotonic()
    c.start("nats")
    for name in c.names():
        c.start(name)
    try:
        victims = [*c.names(), "nats"]
        for rnd in range(args.rounds):
            until = time.monotonic() + rng.uniform(0.3, 1.5)
            while time.monotonic() < until:
                for _ in range(5):
                    mut.step()
                time.sleep(0.02)
            victim = rng.choice(victims)
            kills[victim.rstrip("0123456789")] += 1
            c.kill(victim)
            time.sleep(rng.uniform(0.0, 0.5))
            c.start(victim)
            print(f"round {rnd + 1}: killed {victim}", file=sys.stderr)
        for name, proc in c.procs.items():  # one that died on its own would be restarted by supervisord
            if proc.poll() is not None:
                print(f"{name} had exited ({proc.returncode}): started again", file=sys.stderr)
                c.start(name)
        last = time.monotonic()
        want = tree(c.src)
        while time.monotonic() - last < args.converge_timeout and tree(c.dest) != want:
            time.sleep(0.5)
        converged = time.monotonic() - last
        got = tree(c.dest)
    finally:
        c.stop_all()
    lost = sorted(k for k in want if k not in got)
    extra = sorted(k for k in got if k not in want)
    wrong = sorted(k for k in want if k in got and got[k] != want[k])
    ups = uploads(work)
    dup = sum(n - 1 for n in ups.values() if n > 1)
    print(
        f"scale-chaos: {args.rounds} rounds, {WORKERS} workers, {PARTITIONS} partitions; kills {dict(kills)}; "
        f"files at the end {len(want)}; lost {len(lost)}; extra {len(extra)}; wrong {len(wrong)}; "
        f"duplicate uploads {dup} (at most {max(ups.values(), default=0)} of one file); "
        f"converged {converged:.1f}s after the last restart; {time.monotonic() - started:.0f}s in all; "
        f"work dir {work}"
    )
    if lost or extra or wrong:
        print(f"lost {lost[:10]}\nextra {extra[:10]}\nwrong {wrong[:10]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
