"""fc-relay, for tests: fc-filter's flags and conditions run by the durable runner (a state file, inbox, outbox,
acknowledgements, replays), as fc-filter ran before it became a pass-through stage (stages/filter/run.py).

The lightest stage that reads, acknowledges and writes as fc-process and fc-transport do: the durability and
security tests use it (tests/bin/fc-relay, or ``held_for(s, "relay")``) as the reader, or the writer in the middle,
that they kill, restart or lock out.  A pipeline as users run it uses bin/fc-filter."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fileconveyor.cli import _common
from fileconveyor.cli import filter as fc_filter
from fileconveyor.cli._common import Streams
from fileconveyor.cli._stage import run_stage_from_args
from fileconveyor.report import Reporter
from fileconveyor.stages.filter.stage import FilterStage
from fileconveyor.stopping import Stopper


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    stage = FilterStage(fc_filter.conditions_from(args), args.invert)
    return run_stage_from_args(stage, args, io, rep, stop, fc_filter.identity(args))


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-relay", fc_filter.build_parser, body, argv, io)
