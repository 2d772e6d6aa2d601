"""The flags and wiring every event-reading stage shares (fc-filter, fc-process,
fc-transport, fc-record): where events come from and go to, the state file, and
how long to keep retrying once the input has ended."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..delivery.runner import Options, Stage, run_stage
from ..digests import sha256
from ..errors import Exit
from ..report import Reporter
from ..state import default_state_dir
from ..stopping import Stopper
from . import _common
from ._common import Streams, add_max_line_bytes, seconds

STAGE_EPILOG_IO = """\
input and output: events come from stdin (or --input FILE|FIFO) and go to stdout
(or --output FILE|FIFO), one JSON object per line (docs/events.md).  Unknown fields
pass through.  A bad line (not an event, wrong types, longer than --max-line-bytes) is
reported on stderr with its line number and skipped (exit status 1 at the end).

durability: every event read is committed to the state file before it is worked
on, and every event written is committed before it is written; after a kill -9,
run the same command again and unfinished work is redone (docs/durability.md)."""


def add_stage_arguments(p: argparse.ArgumentParser, name: str, status: bool = True) -> None:
    """``status``: add --status (fc-record has one of its own)."""
    g = p.add_argument_group("input, output and state")
    if status:
        g.add_argument(
            "--status",
            dest="stage_status",
            action="store_true",
            help="print what waits in the state file (queued, waiting to be retried, failed, set aside) and "
            "exit; give the options the stage runs with (they choose the default state file)",
        )
    _common.add_reader_flags(g, name)
    g.add_argument("--input", metavar="FILE", help="read events from FILE or a named FIFO instead of stdin")
    g.add_argument(
        "--output",
        metavar="FILE",
        help="write events to FILE (appended) or a named FIFO (waits for a reader, and for a new one "
        "if the reader goes away) instead of stdout",
    )
    g.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help=f"the state file (default: one per set of options, under {default_state_dir()})",
    )
    g.add_argument(
        "--drain-timeout",
        type=seconds,
        default=120.0,
        metavar="SECONDS",
        help="after the input ends, how long to go on without progress (no item done here, the next stage neither "
        "acknowledging more nor working) before giving up (default 120); while work moves it waits; what is "
        "left stays queued for the next run (exit status 4)",
    )
    add_max_line_bytes(g)
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress line on stderr (default: when stderr is a terminal)",
    )


def default_state(name: str, identity: str) -> Path:
    """One state file per distinct configuration, so two rules' stages never share one."""
    digest = sha256(identity.encode()).hexdigest()[:12]
    return default_state_dir() / f"{name.removeprefix('fc-')}-{digest}.db"


def print_status(state: str | Path, io: Streams) -> int:
    """--status: what waits in the state file ``state``."""
    from ..stages.record.status import format_status, state_status  # the records package: only for --status

    path = str(state)
    io.stdout.write(format_status({"state_files": {path: state_status(path)}}).encode())
    io.stdout.flush()
    return Exit.OK


def run_stage_from_args(
    stage: Stage, args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper, identity: str
) -> int:
    progress = args.progress
    if progress is None:
        progress = not args.quiet and io.stderr.isatty() if hasattr(io.stderr, "isatty") else False
    opts = Options(
        state_path=args.state or default_state(stage.name, identity),
        input=args.input,
        output=args.output,
        drain_timeout=args.drain_timeout,
        progress=bool(progress),
        max_line_bytes=args.max_line_bytes,
    )
    if getattr(args, "stage_status", False):
        return print_status(opts.state_path, io)
    if _common.readers_asked(args):
        return _common.readers_command(opts.state_path, args, io)
    rep.info(f"state: {opts.state_path}")
    return run_stage(stage, opts, io.stdin, io.stdout, rep, stop)
