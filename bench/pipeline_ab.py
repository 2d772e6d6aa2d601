#!/usr/bin/env python3
"""Before/after: the fc pipeline shapes of pipeline_bench.py from several checkouts, interleaved.

On a machine that other work loads, figures of one tool taken minutes apart differ by 2-5x; runs of two versions
alternated round by round (before, after, before, after, ...) share the load.  Each checkout is a tree with bin/
and lib/ (an exported commit: ``git archive COMMIT | tar -x -C DIR``, with ``.venv`` linked), so that commits
landing meanwhile change nothing.  Prints, per run, files/s, CPU and peak RSS of the whole pipeline and of each
stage (CPU seconds / MB), and writes every run as JSON.  ``--peers rclone`` runs pipeline_bench.py's peers in the
same rounds, so each fc figure has its ratio to a peer taken under the same load; ``--set large`` is the set of
20 files of 20 MiB.  Each round starts one run further along the list than the last, so that over as many rounds
as there are runs in a round every run has had every place (what runs just before matters: the file system, the
page cache).

    .venv/bin/python bench/pipeline_ab.py --co before=/tmp/before --co after=/tmp/after --shapes 3,5 --rounds 3
    .venv/bin/python bench/pipeline_ab.py --co before=/tmp/b --co after=/tmp/a --shapes 3 --to sftp --set large \\
        --peers rclone
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, CpuMeter, make_tree
from pipeline_bench import Destination, become_subreaper, one_run, tools_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--co", action="append", required=True, metavar="LABEL=DIR", help="a checkout to run (twice or more)"
    )
    p.add_argument("--shapes", default="3,5", help="3, 5 or both (default)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--set", default="small", choices=("small", "large"), help="small (default) or large files")
    p.add_argument("--files", type=int, help="how many (default: 10,000 small files of 4 KiB, 20 large of 20 MiB)")
    p.add_argument("--large-mb", type=int, default=20, help="size of a large file in MiB (default 20)")
    p.add_argument("--peers", default="", help="peers run in the same rounds: rclone, scp, lsyncd, aws (default none)")
    p.add_argument("--to", default="local", choices=("local", "sftp", "ftp", "s3"))
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fc-pipeline-ab")
    p.add_argument("--out", type=Path, help="every run as JSON")
    args = p.parse_args()
    become_subreaper()  # an ssh master left in the background counts in its tool's CPU
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.set == "small":
        count, size = args.files or 10_000, 4096
        tree = work / f"src-small-{count}"
    else:
        count, size = args.files or 20, args.large_mb * 2**20
        tree = work / f"src-large-{count}x{args.large_mb}"
    make_tree(tree, count, size, 100)
    checkouts = [c.split("=", 1) for c in args.co]
    # as pipeline_bench.py and an install do; else each stage compiles its modules (five: 1-3 MB more RSS)
    for _, d in checkouts:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(d) / "lib")], check=True)
    wanted = set(filter(None, args.peers.split(",")))
    peers = [t for t in tools_for(args.to, wanted) if not t.startswith("fc")] if wanted else []
    dest = Destination(args.to, work, dict(os.environ))
    meter = CpuMeter()
    runs = []
    try:
        for r in range(args.rounds):
            todo = [
                (f"{shape}-stage", label, Path(d) / "bin") for shape in args.shapes.split(",") for label, d in checkouts
            ]
            todo += [(peer, peer, ROOT / "bin") for peer in peers]
            # Each round starts one place further along: a run's position in a round weighs as much as a change
            # (the same checkout twice gave 2.50 against 1.86 s when it always ran first; docs/benchmarks.md)
            k = r % len(todo)
            todo = todo[k:] + todo[:k]
            for what, label, bin_dir in todo:
                tool = f"fc {what}" if what.endswith("-stage") else what
                m = one_run(tool, dest, tree, count, size, work, bin_dir)
                per = " ".join(
                    f"{s['cmd'].removeprefix('fc-')}={s['cpu']:.2f}/{s['rss'] / 2**20:.0f}" for s in m.stages
                )
                print(
                    f"r{r} {what:8} {label:8} {m.wall:6.2f} s {count / m.wall:6.0f} files/s "
                    f"{count * size / 1e6 / m.wall:6.0f} MB/s CPU {m.cpu:6.2f} s RSS {m.rss / 2**20:4.0f} MB | {per}",
                    flush=True,
                )
                runs.append({"round": r, "shape": what, "label": label, "wall": m.wall, "cpu": m.cpu,
                             "rss": m.rss, "stages": m.stages})  # fmt: skip
    finally:
        dest.stop()
    print(f"other work took {meter.other_share():.0%} of the machine's CPU meanwhile")
    medians: dict[tuple[str, str], float] = {}
    for key in dict.fromkeys((x["shape"], x["label"]) for x in runs):
        medians[key] = statistics.median(x["wall"] for x in runs if (x["shape"], x["label"]) == key)
    best = min((w for (shape, _), w in medians.items() if not shape.endswith("-stage")), default=None)
    for (shape, label), wall in medians.items():
        ratio = f"  {best / wall:.2f} of the best peer's speed" if best and shape.endswith("-stage") else ""
        print(f"median {shape:8} {label:8} {wall:6.2f} s{ratio}")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
