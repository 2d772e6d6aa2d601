"""fc-publish: put events into a NATS JetStream stream, for fc-consume on other hosts (docs/scale-out.md)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..delivery import nats_hop as N
from ..stages.publish.stage import PublishStage
from . import _common
from ._broker import EPILOG as AUTH_EPILOG
from ._broker import add_auth_arguments, auth_from_args
from ._common import Reporter, Stopper, Streams, positive_int, seconds
from ._stage import STAGE_EPILOG_IO, add_stage_arguments, run_stage_from_args

DESCRIPTION = """\
Publish each event read to a NATS JetStream stream, where fc-consume on other hosts
takes it.  A line is acknowledged to the stage before (fc-watch, fc-filter) only once
the server has stored it, so a kill of fc-publish or of the server loses nothing:
the line is re-sent, and the server drops the copies it already has."""

EPILOG = f"""\
examples:
  fc-watch /srv/www | fc-publish nats://broker:4222/FC
  fc-watch /srv/www | fc-filter --extensions css:js | fc-publish --partitions 16 nats://broker/FC

the stream: made on first use (file storage, work-queue retention) with subjects
STREAM.p.0 ... STREAM.p.N-1; each event goes to the partition of its path (a hash of
the path modulo N), so the events of one path keep their order.  The number of
partitions is fixed when the stream is made; fc-consume reads it from the stream.

{AUTH_EPILOG}

{STAGE_EPILOG_IO}

exit status: 0 done, 1 some input lines were bad, 2 usage, 3 configuration (a stream
with another number of partitions, the NATS client not installed, a login the server
refuses, a key file others may read), 4 try again later (the server did not confirm
everything within --drain-timeout), 130/143 stopped by a signal."""


def _partitions(text: str) -> int:
    n = positive_int(text)
    if n > N.MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"at most {N.MAX_PARTITIONS} partitions")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-publish", DESCRIPTION, EPILOG)
    p.add_argument("url", metavar="nats://HOST:PORT/STREAM", help="the server and the stream (default stream FC)")
    g = p.add_argument_group("the stream")
    g.add_argument(
        "--partitions",
        type=_partitions,
        metavar="N",
        help=f"when the stream is made: its number of partitions (default {N.DEFAULT_PARTITIONS}); an existing "
        "stream with another number is an error",
    )
    g.add_argument(
        "--duplicate-window",
        type=seconds,
        default=120.0,
        metavar="SECONDS",
        help="when the stream is made: how long the server remembers message ids to drop re-sent events "
        "(default 120); fc-consume drops older re-sends itself",
    )
    g.add_argument(
        "--timeout",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the server to confirm a round of events before trying it again (default 5)",
    )
    add_auth_arguments(p)
    add_stage_arguments(p, "fc-publish")
    return p


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    target = N.parse_url(args.url)
    credentials, keys = auth_from_args(args, target, rep)
    stage = PublishStage(target, args.partitions, args.duplicate_window, args.timeout, credentials, keys)
    identity = repr((target.servers.rpartition("@")[2], target.stream, args.input, args.output))
    return run_stage_from_args(stage, args, io, rep, stop, identity)


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-publish", build_parser, body, argv, io)
