#!/usr/bin/env python3
"""make css-soak: a generated site of stylesheets sharing images, fonts and @imports, changed in random bursts
with unique names and link_updater, some runs killed with -9; the destination is sampled while it converges.

    bench/css_soak.py --rounds 30 --css 40 [--burst 8] [--kill-rate 0.2] [--seed N] [--work DIR]

Prints CSS files, references, touches, runs killed, samples taken and broken references seen (must be 0);
exit status 1 when one was seen."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from tests.durability import css_soak  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--css", type=int, default=40)
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--burst", type=int, default=8)
    p.add_argument("--kill-rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, help="working directory (default: a new temporary one, kept)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fc-css-soak-"))
    started = time.monotonic()
    report = css_soak.soak(
        work,
        css_files=args.css,
        images=args.images,
        rounds=args.rounds,
        burst=args.burst,
        kill_rate=args.kill_rate,
        seed=args.seed,
    )
    print(f"css-soak: {report.summary()}; {time.monotonic() - started:.0f}s in all; work dir {work}")
    if report.broken or report.unresolved_at_end:
        print("\n".join((report.broken + report.unresolved_at_end)[:20]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
