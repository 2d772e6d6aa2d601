#!/usr/bin/env python3
"""fc-process benchmark: the two performance targets of the fc-process issue, side by side.

1. --files mixed files (1/3 PNG, 1/3 JPEG, 1/3 CSS/JS; default 10,000) through
   ``image_optimizer.Max``:
     fc-process --jobs 1, fc-process --jobs 2, and the same tools run directly by
     ``xargs -P2`` (optipng / jpegtran with the arguments image_optimizer.Max uses).
   Targets: jobs 2 >= 1.8x jobs 1, and jobs 2 at least as fast as xargs -P2.
2. --events events no processor applies to (default 100,000 .txt files, chain
   image_optimizer.Max) through fc-process with its default --jobs.
   Target: >= 20,000 events/s.  fc-filter (the same runner, work done inline) and
   ``cat`` are shown for reference.

Every run starts with a fresh state file; inputs are files (``--input``), outputs
go to files, so the figures are the command's own.  Each row gives the wall
time and the CPU time (user + sys of the command and the tools it ran): on a busy
machine wall-clock ratios mean little, while CPU shows fc-process's own overhead
over the bare tools.  "own CPU" is fc-process's process alone, without its tools
(measured inside it at exit, start-up included): the figure other load and the tools' own variation
(about 1 s either way on the full CPU column) do not blur.  Before each run it waits (up to --quiet-wait s) for other
work to stop, and shows how much CPU other processes took during the run anyway.
Results: stdout and bench/results/process-<date>.md.  Not run by ``make test``.

Smoke run (a few minutes): python3 bench/process_bench.py --files 1500 --events 50000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

PROGRESSIVE_FROM = 10 * 1024  # as image_optimizer.Max: progressive JPEG from 10 KiB


def make_tree(d: Path, n: int, seed: int = 7) -> list[Path]:
    """n files: a third PNG, a third JPEG, a third CSS/JS (varied content, as on a site)."""
    from PIL import Image

    rnd = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    templates: list[Image.Image] = []
    for t in range(24):
        w, h = rnd.randrange(120, 360), rnd.randrange(90, 270)
        im = Image.new("RGB", (w, h))
        im.putdata(
            [
                ((x * (t + 3)) % 256, (y * 5 + t) % 256, ((x + y) * 3 + rnd.randrange(12)) % 256)
                for y in range(h)
                for x in range(w)
            ]
        )
        templates.append(im)
    css = "".join(f".c{i} {{ margin : {i}px  auto ; color : #{i:06x} ; }}\n/* rule {i} */\n" for i in range(80))
    js = "".join(f"function f{i}(a, b) {{\n  // add {i}\n  return a + b + {i};\n}}\n" for i in range(60))
    files = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            p = d / f"p{i:06d}.png"
            templates[i % len(templates)].save(p, compress_level=rnd.choice([1, 3, 6]))
        elif kind == 1:
            p = d / f"j{i:06d}.jpg"
            templates[(i * 7) % len(templates)].save(p, quality=rnd.choice([80, 90, 95]))
        else:
            p = d / (f"s{i:06d}.css" if i % 2 else f"s{i:06d}.js")
            p.write_text((css if i % 2 else js) + f"/* {i} */\n")
        files.append(p)
    return files


def events_file(path: Path, files: list[Path]) -> None:
    from fileconveyor import events as E

    with open(path, "wb") as f:
        for p in files:
            st = p.stat()
            ev = {"v": 1, "kind": "created", "source": "bench", "root": str(p.parent), "path": str(p), "rel": p.name}
            ev.update(size=st.st_size, mtime_ns=str(st.st_mtime_ns))
            f.write(E.encode(ev))


def pass_events(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "v": 1,
                        "id": f"{i:032x}",
                        "kind": "created",
                        "source": "b",
                        "root": "/srv",
                        "path": f"/srv/d{i % 100}/f{i}.txt",
                        "rel": f"d{i % 100}/f{i}.txt",
                        "size": 10,
                        "mtime": 1.0,
                        "mtime_ns": "1000000000",
                        "ino": i,
                        "via": "scan",
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )


CPU: list[float] = []  # CPU seconds (user + sys, children included) of the last timed run
OWN: list[float | None] = [None]  # fc-process's own CPU seconds (its tools excluded) in the last run

# Runs bin/fc-process in this interpreter and reports, at exit, the CPU of this
# process alone (RUSAGE_SELF: the tools it ran are not in it).
OWN_CPU_WRAPPER = """\
import atexit, os, resource, runpy, sys
def report():
    r = resource.getrusage(resource.RUSAGE_SELF)
    os.write(2, b"\\nbench-own-cpu %.3f\\n" % (r.ru_utime + r.ru_stime))
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float) -> None:
    """Wait (up to ``limit`` seconds) until other work uses less than a quarter of one core."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        b0 = busy_seconds()
        time.sleep(1.0)
        if busy_seconds() - b0 < 0.25:
            return


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], **kw) -> float:  # type: ignore[no-untyped-def]
    c0, b0 = _children_cpu(), busy_seconds()
    t0 = time.perf_counter()
    kw.setdefault("stdout", subprocess.DEVNULL)
    res = subprocess.run(argv, stderr=subprocess.PIPE, **kw)
    took = time.perf_counter() - t0
    CPU[:] = [_children_cpu() - c0]
    OTHERS[:] = [max(0.0, busy_seconds() - b0 - CPU[0])]
    if res.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({res.returncode}): {res.stderr.decode()[-2000:]}")
    lines = res.stderr.decode(errors="replace").splitlines()
    own = [line.split()[1] for line in lines if line.startswith("bench-own-cpu ")]
    OWN[:] = [float(own[-1]) if own else None]
    return took


def fc(cmd: str) -> list[str]:
    return [sys.executable, str(ROOT / "bin" / cmd)]


def run_process(work: Path, events: Path, jobs: int | None, chain: str) -> float:
    state = work / f"state-{time.monotonic_ns()}"
    argv = [sys.executable, "-c", OWN_CPU_WRAPPER, str(ROOT / "bin" / "fc-process"), "--chain", chain]
    argv += ["--input", str(events), "--output", str(state) + ".out"]
    argv += ["--state", str(state) + ".db", "--work-dir", str(work / "fcwork")]
    if jobs:
        argv += ["--jobs", str(jobs)]
    return timed(argv)


def run_xargs(work: Path, files: list[Path]) -> float:
    """The tools image_optimizer.Max runs, straight from xargs -P2 (no staging, no state)."""
    out = work / f"xargs-{time.monotonic_ns()}"
    out.mkdir()
    pngs = [str(p) for p in files if p.suffix == ".png"]
    small, large = [], []
    for p in files:
        if p.suffix == ".jpg":
            (large if p.stat().st_size >= PROGRESSIVE_FROM else small).extend([str(out / p.name), str(p)])
    jobs = [
        (["optipng", "-quiet", "-o2", "-strip", "all", "-dir", str(out)], pngs, 1),
        (["jpegtran", "-copy", "none", "-optimize", "-outfile"], small, 2),
        (["jpegtran", "-copy", "none", "-optimize", "-progressive", "-outfile"], large, 2),
    ]
    c0, b0 = _children_cpu(), busy_seconds()
    t0 = time.perf_counter()
    for cmd, args, per in jobs:
        if args:
            subprocess.run(["xargs", "-0", "-P2", f"-n{per}", *cmd], input="\0".join(args).encode(), check=True)
    took = time.perf_counter() - t0
    CPU[:] = [_children_cpu() - c0]
    OTHERS[:] = [max(0.0, busy_seconds() - b0 - CPU[0])]
    OWN[:] = [None]
    shutil.rmtree(out)
    return took


HEADER = "| run | wall | CPU | own CPU | rate | ratio | others' CPU meanwhile |\n|---|---|---|---|---|---|---|"
OTHERS: list[float] = [0.0]  # CPU seconds other processes used during the last timed run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000, help="mixed files for the image_optimizer.Max run")
    ap.add_argument("--events", type=int, default=100_000, help="events for the pass-through run")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement (best is kept)")
    ap.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait for other work to stop first")
    ap.add_argument("--workdir", type=Path, default=None, help="where the tree goes (default: a temporary dir)")
    args = ap.parse_args()
    for tool in ("optipng", "jpegtran", "xargs"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (scripts/install-system-deps test installs it)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fc-process-bench-"))
    rows: list[str] = []

    def report(name: str, seconds: float, count: int, note: str = "") -> None:
        own = f"{OWN[0]:.2f} s ({OWN[0] * 1000 / count:.2f} ms/file)" if OWN[0] is not None else ""
        row = (
            f"| {name} | {seconds:.2f} s | {CPU[0]:.2f} s | {own} | {count / seconds:,.0f}/s | {note} "
            f"| {OTHERS[0]:.1f} s |"
        )
        rows.append(row)
        print(row, flush=True)

    print(f"work dir {work}; generating {args.files} files ...", file=sys.stderr)
    files = make_tree(work / "tree", args.files)
    ev = work / "mixed.jsonl"
    events_file(ev, files)
    print(HEADER, flush=True)

    def best(run: Callable[[], float]) -> float:
        """The fastest of --repeat runs (CPU: of that run)."""
        results = []
        for _ in range(args.repeat):
            wait_for_quiet(args.quiet_wait)
            took = run()
            results.append((took, CPU[0], OTHERS[0], OWN[0]))
        took, CPU[0], OTHERS[0], OWN[0] = min(results, key=lambda r: r[0])
        return took

    t1 = best(lambda: run_process(work, ev, 1, "image_optimizer.Max"))
    report("fc-process --jobs 1, image_optimizer.Max", t1, len(files))
    t2 = best(lambda: run_process(work, ev, 2, "image_optimizer.Max"))
    report("fc-process --jobs 2, image_optimizer.Max", t2, len(files), f"{t1 / t2:.2f}x jobs 1 (target >= 1.8x)")
    tx = best(lambda: run_xargs(work, files))
    report("xargs -P2 optipng / jpegtran", tx, len(files), f"fc-process --jobs 2 takes {t2 / tx:.2f}x (target <= 1)")

    pe = work / "pass.jsonl"
    pass_events(pe, args.events)
    tp = best(lambda: run_process(work, pe, None, "image_optimizer.Max"))
    report("fc-process pass-through (no processor applies)", tp, args.events, "target >= 20,000/s")
    filt = [*fc("fc-filter"), "--input", str(pe), "--output", os.devnull]
    tf = best(lambda: timed([*filt, "--state", str(work / f"f{time.monotonic_ns()}.db")]))
    report("fc-filter (same runner, inline work), reference", tf, args.events)
    tc = best(lambda: timed(["cat", str(pe)]))
    report("cat, reference", tc, args.events)

    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"process-{dt.datetime.now():%Y-%m-%d-%H%M}.md"
    cmd = " ".join(sys.argv)
    out.write_text(
        f"# fc-process benchmark\n\n`{cmd}` on {os.cpu_count()} cores, {args.files} mixed files, {args.events} "
        f"pass-through events\n\n{HEADER}\n" + "\n".join(rows) + "\n"
    )
    print(f"written to {out}", file=sys.stderr)
    if not args.workdir:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
