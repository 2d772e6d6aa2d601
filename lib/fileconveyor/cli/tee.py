"""fc-tee: copy one event stream to several FIFOs or files (fan-out to several rules)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..delivery.streams import has_fd, input_batches
from ..errors import Exit
from ..report import Reporter
from ..stages.tee.stage import Tee
from ..stages.tee.writers import input_pipe
from ..stopping import Stopper
from . import _common
from ._common import Streams, seconds

DESCRIPTION = """\
Copy every event line from stdin (or --input) to each --output, unchanged: one
watch feeding several rules, each rule's stages reading its own FIFO.  Like
tee(1), but an output whose reader is gone is skipped instead of ending the run,
and a FIFO whose reader comes back (restarted by supervisord or fc-conveyor) is
written to again."""

EPILOG = """\
examples:
  mkfifo -m 600 watch.fifo css.fifo videos.fifo
  fc-watch --output watch.fifo /srv/www &
  fc-tee --input watch.fifo --output css.fifo --output videos.fifo &
  fc-filter --input css.fifo --extensions css:js | fc-transport --to file:///srv/cdn ... &
  fc-filter --input videos.fifo --extensions mov:avi | fc-transport --to sftp://... &

  fc-watch /srv/www | fc-tee --output a.fifo --output -     # "-" is stdout

why nothing is lost: fc-tee keeps no state.  Lines pass through with their "hop"
field, so each reader acknowledges to the stage that wrote them (fc-watch), and
that stage re-sends whatever a reader has not acknowledged when the reader
restarts (docs/durability.md).  So fc-tee skips outputs whose reader is gone, and
never waits for them; it does wait for a slow reader (back-pressure) and, at
start, up to --first-wait for every FIFO's first reader.  A reader later than that
is sent the last line of each writer once it opens its FIFO, even while no line
arrives: on those, a File Conveyor stage asks the writers for all it missed.
Without File Conveyor readers downstream (plain scripts), lines for a gone
reader are lost, as with tee(1).

exit status: 0 the input ended, 1 an incomplete last line or one longer than
--max-line-bytes was dropped, 2 usage,
4 an output could not be opened, 130/143 stopped by a signal."""


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-tee", DESCRIPTION, EPILOG)
    p.add_argument("--input", metavar="FILE", help="read events from FILE or a named FIFO instead of stdin")
    p.add_argument(
        "--output",
        metavar="FILE",
        action="append",
        required=True,
        help="a FIFO or file to copy every line to (repeatable; - is stdout)",
    )
    p.add_argument(
        "--first-wait",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="at start, how long to wait for each FIFO's first reader (default 30)",
    )
    _common.add_max_line_bytes(p)
    return p


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if len(set(args.output)) != len(args.output):
        rep.error("an --output is given twice: each line would be written to it twice")
        return Exit.USAGE
    if "-" in args.output and not has_fd(io.stdout):
        rep.error("--output - needs a real stdout")
        return Exit.USAGE
    source = input_pipe(args.input, io.stdin)
    tee = Tee(args.output, io.stdout, rep.warn, rep.info, lambda: stop.requested, args.first_wait, source)
    # a generator: the input is opened when the first line is asked for, once the outputs are
    batches = input_batches(args.input, io.stdin, stop.fileno(), lambda: stop.requested, args.max_line_bytes)
    return tee.run(batches, rep.error, args.max_line_bytes)


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-tee", build_parser, body, argv, io)
