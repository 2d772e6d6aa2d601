#!/usr/bin/env python3
"""The delivery protocol's own cost per line: a durable stage that does nothing (its ``quick`` passes the event on
with one field added, as fc-transport adds its own) run in this process by the real Runner on fc-watch's lines of a
directory, from a file, into memory.  What it costs is what every durable stage (fc-transport, fc-process) pays per
line before its own work: reading, decode, the hop taken, the commit (outbox, marks), writing.

    PYTHONPATH=CHECKOUT/lib python bench/delivery_cost.py SRC [--reps 5] [--lines N] [--no-hops]

prints CPU per line (medians and minimums of --reps runs).  On a busy machine CPU seconds vary by 30% and more;
instructions do not, so A/B figures are best counted with callgrind, the run with --lines 0 taken off (start-up):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/delivery_cost.py SRC --reps 1 --lines 3000

Its lines carry the hop of a writer made for each run after this process started (a fresh fc-watch run writing
into our pipe), so nothing is held for a replay.  Not run by ``make test``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.durable import StageState
from fileconveyor.delivery.runner import Done, Item, Options, Runner, Stage
from fileconveyor.report import Reporter
from fileconveyor.stopping import Stopper

BIN = Path(__file__).resolve().parent.parent / "bin"


class Passes(Stage):
    """Every item finished at once, its line passed on with one field added (no encoding: events.members)."""

    name = "fc-delivery-cost"

    def lanes(self) -> dict[str, int]:
        return {"x": 1}

    def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
        return [("x", E.get_path(event, "path"), event)]

    def quick(self, item: Item) -> Done:
        out = {k: v for k, v in item.event.items() if k != "hop"}
        out["transported"] = "x"
        return Done([out], added=("transported",))

    def work(self, item: Item) -> Done:
        return self.quick(item)


def watch_lines(src: Path, work: Path) -> list[bytes]:
    """fc-watch --scan-once's lines of ``src``."""
    env = {**os.environ, "FC_STATE_DIR": str(work / "watch-state")}
    run = subprocess.run(
        [sys.executable, str(BIN / "fc-watch"), "--scan-once", str(src)], env=env, capture_output=True, check=True
    )
    return run.stdout.splitlines(keepends=True)


def as_our_writers(lines: list[bytes], work: Path) -> bytes:
    """``lines`` with the hop of a writer whose state is made now, after this process started (runs.nothing_lost:
    nothing to hold), its lines written: as a fresh writer's into our pipe."""
    hop = E.decode(lines[0])["hop"]
    writer = StageState(work / "writer.db")
    with writer.transaction() as db:
        writer.mark_written(db, max(E.decode(line)["hop"]["seq"] for line in lines))
    origin, epoch = writer.origin, writer.epoch
    writer.close()
    data = b"".join(lines).replace(json.dumps(hop["from"]).encode(), json.dumps(origin).encode())
    return data.replace(hop["epoch"].encode(), epoch.encode())


def one_run(lines: list[bytes], hops: bool, work: Path) -> float:
    """CPU seconds of one stage run over ``lines``."""
    data = as_our_writers(lines, work) if hops else b"".join(lines)
    path = work / "in.ndjson"
    path.write_bytes(data)
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=work / "stage.db", input=str(path))
    runner = Runner(Passes(), opts, io.BytesIO(), out, Reporter("fc-delivery-cost", err, 1), Stopper())
    start = time.process_time()
    runner.run()
    took = time.process_time() - start
    written = out.getvalue().count(b"\n")
    if written != len(lines):
        sys.exit(f"delivery_cost: {written} of {len(lines)} lines out\n{err.getvalue()[-2000:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="a directory (fc-watch --scan-once of it gives the lines)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--lines", type=int, help="only the first N lines (0: start-up alone)")
    p.add_argument("--no-hops", action="store_true", help="lines without a hop (as from a file of saved events)")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fc-delivery-cost-"))
    try:
        lines = watch_lines(args.src, base)
        if args.no_hops:
            lines = [E.encode({k: v for k, v in E.decode(line).items() if k != "hop"}) for line in lines]
        lines = lines[: args.lines] if args.lines is not None else lines
        took = []
        for rep in range(args.reps if lines else 0):
            work = base / f"run{rep}"
            work.mkdir()
            took.append(one_run(lines, not args.no_hops, work))
            shutil.rmtree(work)
        if took:
            per = [t / len(lines) * 1e6 for t in took]
            print(f"{len(lines)} lines: CPU per line {statistics.median(per):.2f} us (median), {min(per):.2f} us (min)")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
