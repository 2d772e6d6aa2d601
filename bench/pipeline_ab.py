#!/usr/bin/env python3
"""Before/after: the fc pipeline shapes of pipeline_bench.py from several checkouts, interleaved.

On a machine that other work loads, figures of one tool taken minutes apart differ by 2-5x; runs of two versions
alternated round by round (before, after, before, after, ...) share the load.  Each checkout is a tree with bin/
and lib/ (an exported commit: ``git archive COMMIT | tar -x -C DIR``, with ``.venv`` linked), so that commits
landing meanwhile change nothing.  Prints, per run, files/s, CPU and peak RSS of the whole pipeline and of each
stage (CPU seconds / MB), and writes every run as JSON.

    .venv/bin/python bench/pipeline_ab.py --co before=/tmp/before --co after=/tmp/after --shapes 3,5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchlib import CpuMeter, make_tree
from pipeline_bench import Destination, one_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--co", action="append", required=True, metavar="LABEL=DIR", help="a checkout to run (twice or more)"
    )
    p.add_argument("--shapes", default="3,5", help="3, 5 or both (default)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, default=10_000, help="small files of 4 KiB, 100 per directory")
    p.add_argument("--to", default="local", choices=("local", "sftp", "ftp", "s3"))
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fc-pipeline-ab")
    p.add_argument("--out", type=Path, help="every run as JSON")
    args = p.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tree = work / f"src-small-{args.files}"
    make_tree(tree, args.files, 4096, 100)
    checkouts = [c.split("=", 1) for c in args.co]
    dest = Destination(args.to, work, dict(os.environ))
    meter = CpuMeter()
    runs = []
    try:
        for r in range(args.rounds):
            for shape in args.shapes.split(","):
                for label, d in checkouts:
                    m = one_run(f"fc {shape}-stage", dest, tree, args.files, 4096, work, Path(d) / "bin")
                    per = " ".join(f"{s['cmd'][3:]}={s['cpu']:.2f}/{s['rss'] / 2**20:.0f}" for s in m.stages)
                    print(
                        f"r{r} {shape}-stage {label:8} {m.wall:6.2f} s {args.files / m.wall:6.0f} files/s "
                        f"CPU {m.cpu:6.2f} s RSS {m.rss / 2**20:4.0f} MB | {per}",
                        flush=True,
                    )
                    runs.append({"round": r, "shape": shape, "label": label, "wall": m.wall, "cpu": m.cpu,
                                 "rss": m.rss, "stages": m.stages})  # fmt: skip
    finally:
        dest.stop()
    print(f"other work took {meter.other_share():.0%} of the machine's CPU meanwhile")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
