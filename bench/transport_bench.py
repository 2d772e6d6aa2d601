#!/usr/bin/env python3
"""fc-transport benchmark: against rclone copy (same number of transfers) and, for SFTP, scp -r.

Not run by `make test`.  One run measures, side by side:

- many small files (default 10,000 of 4 KB) and a few large ones (default 20 of 20 MB),
- to a local folder and to SFTP (OpenSSH's sshd started here on 127.0.0.1, key login),
- fc-transport (events made beforehand by fc-watch --scan-once, so only the transport is timed, from
  process start to exit, state file and all) against `rclone copy --transfers N --checkers N` and `scp -r`.
  rclone's SFTP backend runs with disable_hashcheck (by default it runs md5sum over SSH after each file, which
  made it 50x slower on small files here: the comparison is with rclone at its fastest).

Each measurement starts from an empty destination and a fresh fc-transport state; the median of --repeat
runs is reported, as files/s and MB/s, with the ratio fc-transport / rclone (above 1: fc-transport is faster).
Results: bench/results/transport-<date>.md and stdout.  A missing peer tool is an error, never a skip
(scripts/install-system-deps bench installs rclone and openssh).

Quick run (about a minute): .venv/bin/python bench/transport_bench.py --small 2000 --large 5 --large-mb 10
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

from benchlib import (
    PY,
    ROOT,
    Sshd,
    check_copy,
    clear_set_aside,
    make_tree,
    need,
    remove_state,
    results_file,
    run,
    set_aside,
)


def add_set_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the two file sets, shared with bench/s3_bench.py."""
    p.add_argument("--small", type=int, default=10_000, help="number of small files (default 10000)")
    p.add_argument("--small-kb", type=int, default=4, help="size of a small file in KB (default 4)")
    p.add_argument("--large", type=int, default=20, help="number of large files (default 20)")
    p.add_argument("--large-mb", type=int, default=20, help="size of a large file in MB (default 20)")
    p.add_argument("--sets", default="small,large", help="which sets to run: small, large or both (default)")
    p.add_argument(
        "--compare-with",
        type=Path,
        metavar="CHECKOUT",
        help="also time the fc-transport of another checkout (say, before a change), in the same run",
    )


def make_sets(args: argparse.Namespace, work: Path) -> tuple[dict[str, tuple[Path, int, int]], dict[str, Path]]:
    """The small and large trees (made once, kept between runs) and their fc-watch events."""
    sets = {
        "small": (work / "src-small", args.small, args.small_kb * 1024),
        "large": (work / "src-large", args.large, args.large_mb * 1024 * 1024),
    }
    for tree, count, size in sets.values():
        make_tree(tree, count, size)
    return sets, {name: events_for(tree, work) for name, (tree, _, _) in sets.items()}


def compile_checkouts(args: argparse.Namespace) -> None:
    """Byte-compile the checkouts' lib/ before timing, as pip does when it installs File Conveyor: else, with
    PYTHONDONTWRITEBYTECODE set (as on some CI machines), every run compiles fc-transport's modules again."""
    for checkout in (ROOT, *([args.compare_with] if args.compare_with else [])):
        run([PY, "-m", "compileall", "-q", str(checkout / "lib")])


def write_report(kind: str, title: str, details: Sequence[str], column: str, rows: Sequence[tuple]) -> None:
    """bench/results/<kind>-<date>.md (and stdout): a table of (set, ``column``, tool, files/s, MB/s, median,
    runs) rows; a tool named "ratio ..." is a ratio row, in bold."""
    stamp, out = results_file(kind, ".md")
    lines = [
        f"# {title}, {stamp}",
        "",
        f"Command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`  ",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}  ",
        *details,
        "",
        f"| set | {column} | tool | files/s | MB/s | median s | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, where, label, fps, mbps, median, times in rows:
        if label.startswith("ratio"):
            lines.append(f"| {name} | {where} | **{label}** | **{fps:.2f}** | | | |")
        else:
            runs = ", ".join(f"{t:.2f}" for t in times)
            lines.append(f"| {name} | {where} | {label} | {fps:.0f} | {mbps:.1f} | {median:.2f} | {runs} |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    print(text)
    print(f"written to {out}")


def events_for(tree: Path, work: Path) -> Path:
    out = work / f"{tree.name}.jsonl"
    env = {**os.environ, "FC_STATE_DIR": str(work / f"watch-state-{tree.name}")}
    shutil.rmtree(env["FC_STATE_DIR"], ignore_errors=True)
    with open(out, "wb") as f:
        subprocess.run([PY, str(ROOT / "bin" / "fc-watch"), "--scan-once", str(tree)], stdout=f, env=env, check=True)
    return out


def timed(prepare: Callable[[], None], action: Callable[[], None], repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        prepare()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_arguments(p)
    p.add_argument("--connections", type=int, default=4, help="connections / rclone transfers (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement, median reported (default 3)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fc-transport-bench")
    p.add_argument("--to", default="local,sftp", help="which destinations: local, sftp or both (default)")
    p.add_argument(
        "--tools", default="", help="only these tools, comma-separated labels' first words (fc-transport,rclone,scp)"
    )
    args = p.parse_args()
    peers = args.tools.split(",") if args.tools else ["rclone", "scp"]
    for tool in ("rclone", "scp", "ssh-keygen", "sshd"):
        if tool in ("ssh-keygen", "sshd") or tool in peers:  # --tools fc-transport --compare-with: no peers needed
            need(tool)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    n = args.connections
    sets, events = make_sets(args, work)
    compile_checkouts(args)
    sshd = Sshd(work)
    remote = work / "remote"  # the SFTP destination, seen on the local file system
    sftp_q = f"?key_file={quote(str(sshd.key))}&known_hosts={quote(str(sshd.known_hosts))}&agent=no&connections={n}"
    rclone_sftp = (
        f":sftp,host=127.0.0.1,port={sshd.port},user={sshd.user},key_file={sshd.key},"
        f"known_hosts_file={sshd.known_hosts},disable_hashcheck=true:"
    )
    rclone = ["rclone", "--config", "/dev/null", "copy", "--transfers", str(n), "--checkers", str(n)]
    scp = ["scp", "-q", "-r", "-i", str(sshd.key), "-P", str(sshd.port), "-o", f"UserKnownHostsFile={sshd.known_hosts}"]
    rows = []
    try:
        for name, (tree, count, size) in sets.items():
            if name not in args.sets.split(","):
                continue
            mb = count * size / 1e6
            for where in args.to.split(","):
                dest = work / "dest-local" if where == "local" else remote
                state = work / "transport-state.db"

                def clean(dest: Path = dest, state: Path = state) -> None:
                    set_aside(dest, work)  # not deleted now: see benchlib.set_aside
                    remove_state(state)

                spec = (
                    f"file://{quote(str(dest))}?connections={n}"
                    if where == "local"
                    else (f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{quote(str(dest))}{sftp_q}")
                )
                fc = [PY, str(ROOT / "bin" / "fc-transport"), "-q", "--to", spec, "--state", str(state)]
                fc += ["--input", str(events[name]), "--output", os.devnull]
                peers: dict[str, list[str]] = {"fc-transport": fc}
                if args.compare_with:
                    other = str(args.compare_with / "bin" / "fc-transport")
                    peers[f"fc-transport ({args.compare_with})"] = [fc[0], other, *fc[2:]]
                peers |= {
                    f"rclone copy --transfers {n}": [
                        *rclone,
                        str(tree),
                        str(dest) if where == "local" else rclone_sftp + str(dest),
                    ],
                }
                if where == "sftp":
                    peers["scp -r"] = [*scp, str(tree), f"{sshd.user}@127.0.0.1:{dest}"]
                if args.tools:
                    wanted = args.tools.split(",")
                    peers = {label: argv for label, argv in peers.items() if label.split()[0] in wanted}
                results = {}
                for label, argv in peers.items():
                    median, times = timed(clean, lambda argv=argv: run(argv), args.repeat)
                    check_copy(tree, dest)
                    results[label] = median
                    rows.append((name, where, label, count / median, mb / median, median, times))
                    print(f"{name:5} {where:5} {label:28} {count / median:9.0f} files/s {mb / median:8.1f} MB/s")
                if f"rclone copy --transfers {n}" not in results or "fc-transport" not in results:
                    continue
                base = results[f"rclone copy --transfers {n}"]
                rows.append((name, where, "ratio fc-transport / rclone", base / results["fc-transport"], 0, 0, []))
                if args.compare_with:
                    other = base / results[f"fc-transport ({args.compare_with})"]
                    rows.append((name, where, f"ratio fc-transport ({args.compare_with}) / rclone", other, 0, 0, []))
                print(f"{name:5} {where:5} fc-transport / rclone throughput: {base / results['fc-transport']:.2f}")
    finally:
        sshd.stop()
        clear_set_aside(work)
    report(args, rows)


def report(args: argparse.Namespace, rows: list) -> None:
    details = [
        f"Sets: small = {args.small} x {args.small_kb} KB, large = {args.large} x {args.large_mb} MB; "
        f"{args.connections} connections/transfers; median of {args.repeat}",
    ]
    write_report("transport", "fc-transport benchmark", details, "to", rows)


if __name__ == "__main__":
    main()
