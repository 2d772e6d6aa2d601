#!/usr/bin/env python3
"""Start-up: each stage run on an empty input, from one or more checkouts, interleaved; its wall time, CPU and the
modules it imported.

Every stage of a pipeline pays its start on every run: a cron run of a few files is mostly start-up, and on the
large-file sets the pipeline's fixed cost (three or five interpreters on two cores, then their ends) is what
separates it from rclone.  Each round runs every stage of every checkout once (``bin/fc-<stage>``, a fresh state
directory made 0755 as mkdir leaves it, stdin empty), so the checkouts share the machine's load; medians over the
rounds.  The modules are counted by one more run under ``-X importtime``.  A checkout is a tree with bin/ and lib/
(``git archive COMMIT | tar -x -C DIR``, ``.venv`` linked), as for pipeline_ab.py.

    .venv/bin/python bench/startup_bench.py --co before=/tmp/before --co after=/tmp/after --rounds 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = {
    "watch": ["--scan-once", "{src}"],
    "filter": ["--extensions", "bin"],
    "process": ["--chain", "filename.SpacesToUnderscores"],
    "transport": ["--to", "file://{dest}"],
    "record": ["--db", "{db}"],
}


def one(checkout: Path, stage: str, work: Path, importtime: bool = False) -> tuple[float, float, int]:
    """Wall and CPU seconds of one run (and, under -X importtime, how many modules it imported)."""
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    state.chmod(0o755)
    names = {"src": work / "src", "dest": work / "dest", "db": state / "synced.db"}
    argv = [a.format(**names) for a in STAGES[stage]]
    python = checkout / ".venv" / "bin" / "python"
    cmd = [str(python), *(["-X", "importtime"] if importtime else []), str(checkout / "bin" / f"fc-{stage}"), *argv]
    env = {**os.environ, "FC_STATE_DIR": str(state), "PYTHONPATH": str(checkout / "lib")}
    started = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read() if p.stderr else b""
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{checkout} fc-{stage}: exit {os.waitstatus_to_exitcode(status)}\n{err.decode()[-2000:]}")
    modules = sum(1 for line in err.decode().splitlines() if line.startswith("import time:") and "|" in line) - 1
    return wall, usage.ru_utime + usage.ru_stime, modules


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--co", action="append", required=True, metavar="LABEL=DIR", help="a checkout (once or more)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--stages", default=",".join(STAGES), help="which (default: all five)")
    args = p.parse_args()
    checkouts = [(label, Path(d).resolve()) for label, d in (c.split("=", 1) for c in args.co)]
    stages = args.stages.split(",")
    for _, d in checkouts:  # as an install and the other benchmarks do: else each run compiles
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(d / "lib")], check=True)
    with tempfile.TemporaryDirectory(prefix="fc-startup-") as tmp:
        work = Path(tmp)
        (work / "src").mkdir()
        (work / "dest").mkdir()
        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        modules = {(label, s): one(d, s, work, importtime=True)[2] for label, d in checkouts for s in stages}
        for _ in range(args.rounds):
            for s in stages:
                for label, d in checkouts:
                    runs.setdefault((label, s), []).append(one(d, s, work)[:2])
    print(f"| stage | checkout | wall ms (median of {args.rounds}) | CPU ms (median) | modules |")
    print("|---|---|---:|---:|---:|")
    for s in stages:
        for label, _ in checkouts:
            v = runs[(label, s)]
            wall = statistics.median(w for w, _ in v) * 1000
            cpu = statistics.median(c for _, c in v) * 1000
            print(f"| fc-{s} | {label} | {wall:.0f} | {cpu:.0f} | {modules[(label, s)]} |")


if __name__ == "__main__":
    main()
