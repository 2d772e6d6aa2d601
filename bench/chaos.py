#!/usr/bin/env python3
"""make chaos: kill -9 stages of a running pipeline, round after round, then check
that the destinations and the record database converge to exactly the source tree.

    bench/chaos.py --rounds 100 --files 3000 [--topology pipeline|conveyor|both] [--seed N] [--work DIR]

Topologies (tests/durability/chaos.py): ``pipeline``, the five stages of one rule;
``conveyor``, the processes fc-conveyor runs for one source fanned out by fc-tee to
two rules (one with a filter and a chain, one plain); ``both`` (the default), one
after the other, ``--rounds`` rounds each.

Prints rounds, kills per stage, files lost and wrong (both must be 0; per rule for
the conveyor), uploads, and
the time to converge after the last restart; exit status 1 on loss.  With inotifywait
(Debian: inotify-tools) it also watches the destination and charges each duplicate
upload (the same bytes sent again under the same name) to the kills before it: which
stage, and whether the file was in flight in it (tests/durability/chaos_dupes.py)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from tests.durability import chaos  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=100, help="rounds of each topology run")
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--topology",
        choices=(*chaos.TOPOLOGIES, "both"),
        default="both",
        help="pipeline: the five stages of one rule; conveyor: fc-conveyor's processes for one source fanned out "
        "by fc-tee to two rules; both (default): one run of each, one after the other",
    )
    p.add_argument("--work", type=Path, help="working directory (default: a new temporary one, kept)")
    p.add_argument("--converge-timeout", type=float, default=600.0)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fc-chaos-"))
    started = time.monotonic()
    trace = shutil.which("inotifywait") is not None
    if not trace:
        print("chaos: no inotifywait (Debian: inotify-tools): duplicate uploads are not traced", file=sys.stderr)
    status = 0
    topologies = chaos.TOPOLOGIES if args.topology == "both" else (args.topology,)
    for topology in topologies:
        # one directory each: a topology's state files and trees are its own
        where = work / topology if len(topologies) > 1 else work
        report = chaos.run(
            where,
            args.rounds,
            args.files,
            args.seed,
            args.converge_timeout,
            say=lambda t, topology=topology: print(f"{topology}: {t}", file=sys.stderr),
            trace=trace,
            topology=topology,
        )
        print(f"chaos: {report.summary()}; {time.monotonic() - started:.0f}s so far; work dir {where}", flush=True)
        if not report.ok:
            print(f"lost {report.lost[:10]}\nextra {report.extra[:10]}\nrecord {report.record_wrong[:10]}")
            print(report.stderr_tail)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
