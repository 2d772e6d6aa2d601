"""fc-watch: flags and wiring.  The logic lives in stages/watch/stage.py and watchers/."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..delivery.pipe_tail import PipeTail
from ..delivery.streams import is_fifo, open_fifo_for_writing
from ..errors import ConfigError, Exit, Stopped, UsageError
from ..events import EventWriter
from ..report import Progress, Reporter
from ..stages.watch.stage import Core, Options, Source, run_live
from ..stages.watch.state import WatchState
from ..state import default_state_dir
from ..stopping import Stopper
from ..watchers.base import BACKENDS, auto_backend, make_backend
from ..watchers.links import skipped_message
from ..watchers.tree import Filters
from . import _common
from ._common import Streams, positive_int, seconds

PROG = "fc-watch"
SETTLE_TIMEOUT = 30.0  # at the end, how long to wait for a reader that is not a File Conveyor stage to read
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


def default_state_path(sources: Sequence[Source]) -> Path:
    h = hashlib.sha256()
    for s in sorted(sources, key=lambda s: s.name):
        h.update(s.name.encode() + b"\0" + s.root + b"\0")
    return default_state_dir() / f"watch-{sources[0].name}-{h.hexdigest()[:12]}.db"


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    sources = parse_sources(args.source, args.paths)
    filters = Filters.build(args.ignore_dirs.split(":") if args.ignore_dirs else [], args.exclude)
    state_path = args.state or default_state_path(sources)
    state = WatchState(state_path)
    try:
        for src in sources:
            src.prefix, old = state.bind_source(src.name, src.root)
            if old is not None:
                rep.warn(f"source {src.name!r} was {os.fsdecode(old)}, now {os.fsdecode(src.root)}: starting it afresh")
        opts = Options(
            settle=args.settle, open_wait=args.open_wait, follow_symlinks=args.follow_symlinks, jobs=args.jobs
        )
        writer = _writer(args.output, io, rep, stop)
        if args.output in (None, "-") and writer.fd is not None:
            state.tail = PipeTail(writer.fd)  # a reader that is not a File Conveyor stage: see delivery/pipe_tail.py
        core = Core(
            sources,
            state,
            writer,
            filters,
            opts,
            on_unreadable=lambda src, rel, exc: rep.warn_once(
                f"unreadable:{src.index}:{rel!r}",
                f"cannot read {os.fsdecode(os.path.join(src.root, rel))}: {exc.strerror}; skipping it",
            ),
            on_skipped=lambda src, rel, published: rep.warn(skipped_message(src.root, rel, published)),
        )
        replayed = state.replay()
        if replayed:
            # routine, not a crash: the last run's reader did not take them all (it stopped, or acknowledges later)
            rep.info(f"re-sent {replayed} event(s) the last run's reader did not take (or acknowledge)")
        show = args.progress if args.progress is not None else _isatty(io.stderr)
        progress = Progress(rep, bool(show))
        started = time.monotonic()
        rep.info(f"state: {state_path}")
        for src in sources:
            rep.info(f"source {src.name!r}: {os.fsdecode(src.root)}")
        c = core.counts
        if progress.enabled:
            core.on_progress = lambda: progress.update(
                lambda: f"scanned {c.scanned} files: {c.created} created, {c.modified} modified, {c.deleted} deleted"
            )
        core.should_stop = lambda: stop.requested
        try:
            if args.scan_once:
                for src in sources:
                    if stop.requested:
                        break
                    core.scan(src)
                core.drain(lambda: stop.requested)
            else:
                backend = make_backend(args.backend, core, rep, args.interval)
                rep.info(f"backend: {backend.name}")
                try:
                    run_live(
                        core,
                        backend,
                        lambda: stop.requested,
                        [stop.fileno()],
                        on_ready=lambda: rep.info(
                            f"ready: catch-up scan done ({core.counts.scanned} files), watching with {backend.name}"
                        ),
                    )
                finally:
                    backend.close()
        except Stopped:
            pass  # a scan cut short by SIGTERM/SIGINT: end as after any stop (what was sent is in the state)
        progress.done()
        rep.info(
            f"{c.scanned} files scanned, {c.created} created, {c.modified} modified, {c.deleted} deleted "
            + (f"({c.skipped} symlink(s) leading outside, not published) " if c.skipped else "")
            + f"in {time.monotonic() - started:.1f}s"
        )
        state.commit()
        if not state.settle_output(SETTLE_TIMEOUT, lambda: stop.requested):
            rep.info(
                "the reader of our output closed it before the end (head, a stage that failed?): "
                "this run's events are sent again next run"
            )
            return Exit.BROKEN_PIPE
    finally:
        state.close()
    return Exit.OK


def _writer(output: str | None, io: Streams, rep: Reporter, stop: Stopper) -> EventWriter:
    if output in (None, "-"):
        return EventWriter(io.stdout)
    assert output is not None
    if not is_fifo(output):
        return EventWriter(open(output, "ab"))

    def wait_for_reader() -> int:
        rep.info(f"waiting for a reader on {output}")
        fd = open_fifo_for_writing(output, lambda: stop.requested, blocking=True)
        if fd is None:
            raise BrokenPipeError(f"stopped while waiting for a reader on {output}")
        return fd

    fd = wait_for_reader()
    return EventWriter(os.fdopen(fd, "wb", buffering=0), reopen=wait_for_reader)


def _isatty(stream: object) -> bool:
    try:
        return stream.isatty()  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run(PROG, build_parser, body, argv, io)


if __name__ == "__main__":
    sys.exit(main())
