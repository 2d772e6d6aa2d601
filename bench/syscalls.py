#!/usr/bin/env python3
"""System calls per file, by kind, for every stage of the small-file pipelines (docs/benchmarks.md, "The tenth
session: system calls per file").

Runs fc's 3- and 5-stage shapes, the floor's (bench/floor.py) and ``rclone copy --transfers 4`` on ``--files``
files of 4 KiB (100 a directory) into a local folder, as pipeline_bench.py does, with every process of a stage
under ``strace -f -c`` (its threads and children counted with it: fc-transport's copier, SQLite's checkpointer), and
prints one markdown row per stage: all calls per file, then the kinds of at least ``--min`` calls a file.  strace
makes each call several times dearer, so what it gives here is counts, not times (use perf for those).

    .venv/bin/python bench/syscalls.py [--files 10000] [--checkout DIR] [--tools fc,floor,rclone]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import floor
from benchlib import ROOT, make_tree, need, set_aside
from pipeline_bench import CONNECTIONS, fc_stages, spawn_chain


def calls(summary: Path) -> dict[str, int]:
    """syscall -> calls, from ``strace -c``'s table (the "total" row left out)."""
    out: dict[str, int] = {}
    for line in summary.read_text().splitlines():
        f = line.split()
        # "% time seconds usecs/call calls [errors] syscall": the calls are the fourth column
        if len(f) >= 5 and f[0][:1].isdigit() and f[-1] != "total":
            out[f[-1]] = out.get(f[-1], 0) + int(f[3])
    return out


def stage_name(argv: list[str]) -> str:
    for a in argv:
        name = Path(a).name
        if name.startswith("fc-"):
            return name
    if argv[0] == "rclone":
        return "rclone"
    return f"floor {argv[2]}"  # [python, floor.py, verb, ...]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--checkout", type=Path, default=ROOT, help="a checkout whose bin/ runs fc (default: this one)")
    p.add_argument("--tools", default="fc,floor,rclone")
    p.add_argument("--min", type=float, default=0.05, help="kinds of at least this many calls a file (default 0.05)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fc-syscalls")
    args = p.parse_args()
    strace = need("strace")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tree = work / f"src-small-{args.files}"
    make_tree(tree, args.files, 4096, 100)
    wanted = args.tools.split(",")
    runs: list[tuple[str, str]] = []
    if "fc" in wanted:
        runs += [("fc", "3"), ("fc", "5")]
    if "floor" in wanted:
        runs += [("floor", "3"), ("floor", "5")]
    if "rclone" in wanted:
        runs += [("rclone", "")]
    print(f"| run | stage | calls a file | kinds (calls a file, at least {args.min:g}) |")
    print("|---|---|---:|---|")
    for tool, shape in runs:
        dest, state, traces = work / "dest", work / "state", work / "traces"
        set_aside(dest, work)  # never deleted just before a run: ext4 then pays for each new inode (benchlib)
        for d in (state, traces):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        if tool == "fc":
            stages = fc_stages(shape, tree, f"file://{dest}", state / "synced.db", args.checkout / "bin")
        elif tool == "floor":
            stages = floor.argv(shape, str(tree), str(dest), str(state / "floor.db"))
        else:
            stages = [["rclone", "--config", "/dev/null", "copy", "--transfers", str(CONNECTIONS),
                       "--checkers", str(CONNECTIONS), str(tree), str(dest)]]  # fmt: skip
        wrapped = [[strace, "-f", "-c", "-o", str(traces / f"{i}.txt"), *argv] for i, argv in enumerate(stages)]
        env = {**os.environ, "FC_STATE_DIR": str(state), "PYTHONDONTWRITEBYTECODE": ""}
        log = work / "run.log"
        for proc in spawn_chain(wrapped, env, log):
            if proc.wait() != 0:
                raise SystemExit(f"failed: {proc.args}\n{log.read_text()[-3000:]}")
        copied = sum(len(files) for _, _, files in os.walk(dest))
        if copied != args.files:
            raise SystemExit(f"{tool} {shape}: {copied} files at the destination of {args.files}")
        label = f"{tool} {shape}-stage" if shape else tool
        for i, argv in enumerate(stages):
            c = calls(traces / f"{i}.txt")
            per = {k: v / args.files for k, v in c.items()}
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= args.min)
            print(f"| {label} | {stage_name(argv)} | {sum(per.values()):.2f} | {kinds} |", flush=True)
    shutil.rmtree(work / "set-aside", ignore_errors=True)


if __name__ == "__main__":
    main()
