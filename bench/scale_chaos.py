#!/usr/bin/env python3
"""make scale-chaos: storage host and 3 workers (fc-consume | fc-process | fc-transport | fc-record) on a real
nats-server and PostgreSQL, processes killed -9 round after round, one worker killed for good; then the
destination must equal the source as processed, the record the destination, with every path's order held
(tests/broker/scale_chaos.py says how each is checked).

    bench/scale_chaos.py --rounds 60 --files 2000 [--partitions auto|static] [--seed N] [--work DIR]

Prints kills per process kind, files at the end, lost / extra / wrong / record wrong / order violations (all
must be 0), duplicate uploads, the takeover time of the worker killed for good (--partitions auto), and the
time to converge after the last restart; exit status 1 on a difference."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from tests.broker import scale_chaos  # noqa: E402
from tests.servers.postgres import cluster  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--partitions", choices=("auto", "static"), default="auto",
                   help="auto: leases, and one worker killed for good; static: 2 partitions per worker")  # fmt: skip
    p.add_argument("--work", type=Path, help="working directory (default: a new temporary one, kept)")
    p.add_argument("--converge-timeout", type=float, default=300.0)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fc-scale-chaos-"))
    with cluster() as pg:
        db = pg.url(pg.new_database("scale"))
        report = scale_chaos.run(
            work, db, args.rounds, args.files, args.seed, args.partitions, args.converge_timeout,
            say=lambda text: print(text, file=sys.stderr),
        )  # fmt: skip
    print(f"scale-chaos: {report.summary()}; work dir {work}")
    if not report.ok:
        for what in ("lost", "extra", "wrong", "record_wrong", "older", "resurrected"):
            if getattr(report, what):
                print(f"{what}: {getattr(report, what)[:10]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
