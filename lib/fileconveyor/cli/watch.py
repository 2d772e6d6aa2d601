"""fc-watch: flags and wiring.  The logic lives in stages/watch/ (run.py: from start to end) and watchers/."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, UsageError
from ..report import Progress, Reporter
from ..stages.watch.run import Config, default_state_path, watch
from ..stages.watch.stage import Options, Source
from ..state import default_state_dir
from ..stopping import Stopper
from ..watchers.base import BACKENDS, auto_backend
from ..watchers.tree import Filters
from . import _common
from ._common import Streams, positive_int, seconds

PROG = "fc-watch"
DESCRIPTION = """\
Discover every file that is created, modified or deleted under one or more source
trees and print one JSON event per line on stdout (format: docs/events.md).

On start, fc-watch begins watching, then compares each tree with its state file
and reports what changed while it was not running (on the first run: every file,
as "created").  Then it reports changes live, each once its writer is done.
With --scan-once it only compares and exits: the mode for cron."""

EPILOG = """\
examples:
  fc-watch --scan-once ~/site | jq -c .          # what changed since the last run
  fc-watch ~/site                                # live, until Ctrl-C
  fc-watch --source site=/srv/www --source dl=/home/me/Downloads --ignore-dirs CVS:.svn
  fc-watch --backend polling --interval 10 /mnt/nfs/share

exit status: 0 done (--scan-once), 2 usage, 3 configuration or state file,
4 try again later (state busy, disk full), 5 bug, 130/143 stopped by SIGINT/SIGTERM
(state committed), 141 the reader of stdout went away."""


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser(PROG, DESCRIPTION, EPILOG)
    p.add_argument(
        "paths", nargs="*", metavar="[NAME=]DIR", help="a source tree; NAME defaults to the directory's name"
    )
    p.add_argument("--source", action="append", default=[], metavar="NAME=DIR", help="a named source tree (repeatable)")
    p.add_argument("--scan-once", action="store_true", help="compare the trees with the state, print the changes, exit")
    p.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help=f"how changes are noticed (default: auto, here {auto_backend()}); polling works everywhere, e.g. on NFS",
    )
    p.add_argument("--interval", type=seconds, default=2.0, metavar="S", help="polling interval in seconds (default 2)")
    p.add_argument(
        "--settle",
        type=seconds,
        default=0.25,
        metavar="S",
        help="quiet time after a file's last change before it is reported (default 0.25); "
        "without a close from the writer, size and mtime must also hold still that long",
    )
    p.add_argument(
        "--open-wait",
        type=seconds,
        default=30.0,
        metavar="S",
        help="a file still open for writing is reported after this much quiet anyway (default 30)",
    )
    p.add_argument(
        "--ignore-dirs", default="", metavar="A:B", help="directory names never walked or watched, e.g. CVS:.svn"
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out matching files and directories; a glob without / matches base names (*.tmp), "
        "one with / the path relative to the root (cache/*)",
    )
    p.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="descend into symlinked directories (never into a loop, a directory containing the root, "
        "or /proc, /sys, /dev); a symlink to a file is published only "
        "when it resolves beneath the root or beneath a followed directory's target",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=_default_jobs(),
        metavar="N",
        help=f"processes that scan a large tree together (default on Linux: number of cores, here {_default_jobs()}); "
        "a tree smaller than about 50,000 files is scanned in one process",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write events to FILE (appended) or a named FIFO instead of stdout; a FIFO's reader may "
        "come and go (supervisord): fc-watch waits for the next one and re-sends what it may have lost",
    )
    p.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help=f"the state file (default: one per set of sources under {default_state_dir()})",
    )
    _common.add_reader_flags(p, PROG)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress of scans on stderr (default: when stderr is a terminal)",
    )
    return p


def _default_jobs() -> int:
    # Scan workers are forked; on macOS forking next to CoreFoundation's thread
    # (the FSEvents backend) is unsafe, so other systems scan in one process.
    return (os.cpu_count() or 1) if sys.platform.startswith("linux") else 1


def parse_sources(specs: Sequence[str], plain: Sequence[str]) -> list[Source]:
    sources: list[Source] = []
    names: set[str] = set()
    for spec, named in [(s, True) for s in specs] + [(s, False) for s in plain]:
        name, sep, path = spec.partition("=")
        if not sep or (not named and "/" in name):
            if named:
                raise UsageError(f"--source {spec!r}: expected NAME=DIR")
            name, path = "", spec
        if not path:
            raise UsageError(f"source {spec!r}: empty directory")
        root = os.path.abspath(os.path.expanduser(path))
        if not name:
            base = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.basename(root)).strip("-") or "root"
            name, n = base, 2
            while name in names:
                name, n = f"{base}-{n}", n + 1
        if name in names:
            raise UsageError(f"source name {name!r} is given twice")
        if not os.path.isdir(root):
            raise ConfigError(
                f"source {name!r}: {root} is not a directory"
                if os.path.exists(root)
                else f"source {name!r}: {root} does not exist"
            )
        names.add(name)
        sources.append(Source(name, os.fsencode(root), len(sources)))
    if not sources:
        raise UsageError("no source given: name at least one directory (see --help)")
    return sources


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if _common.readers_asked(args) and args.state is not None:  # (no sources needed)
        return _common.readers_command(args.state, args, io)
    sources = parse_sources(args.source, args.paths)
    if _common.readers_asked(args):
        return _common.readers_command(default_state_path(sources), args, io)
    cfg = Config(
        sources,
        Filters.build(args.ignore_dirs.split(":") if args.ignore_dirs else [], args.exclude),
        Options(settle=args.settle, open_wait=args.open_wait, follow_symlinks=args.follow_symlinks, jobs=args.jobs),
        args.state or default_state_path(sources),
        args.output,
        args.scan_once,
        args.backend,
        args.interval,
    )
    show = args.progress if args.progress is not None else _isatty(io.stderr)
    return watch(cfg, io.stdout, rep, Progress(rep, bool(show)), lambda: stop.requested, stop.fileno())


def _isatty(stream: object) -> bool:
    try:
        return stream.isatty()  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run(PROG, build_parser, body, argv, io)


if __name__ == "__main__":
    sys.exit(main())
