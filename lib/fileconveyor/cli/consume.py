"""fc-consume: events from a NATS JetStream stream, for the stages of this host (docs/scale-out.md)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..delivery import nats_hop as N
from ..delivery.nats_leases import Leases
from ..errors import UsageError
from ..stages.consume.feed import Feed
from ..stages.consume.stage import ConsumeStage
from . import _common
from ._broker import EPILOG as AUTH_EPILOG
from ._broker import add_auth_arguments, auth_from_args
from ._common import Reporter, Stopper, Streams, positive_int, seconds
from ._stage import add_stage_arguments, run_stage_from_args

DESCRIPTION = """\
Take the events fc-publish put into a NATS JetStream stream, from the partitions this
worker owns, and write them for the next stage of this host.  A message is
acknowledged to the server only once the next File Conveyor stage has acknowledged
its line (fc-transport: uploaded), so a kill of any worker process or of the server
loses nothing; a redelivered message is never written twice, and an older event of a
path never overtakes a newer one."""

EPILOG = f"""\
examples:
  fc-consume nats://broker:4222/FC | fc-process ... | fc-transport ... | fc-record ...
  fc-consume --partitions 0-3 nats://broker/FC | ...     # worker 1 of 2 (8 partitions)
  fc-consume --partitions 4-7 nats://broker/FC | ...     # worker 2 of 2
  fc-consume --partitions auto nats://broker/FC | ...    # on every worker: leases

partitions: the stream has N of them (fc-publish --partitions, 8 by default), each
with one durable consumer fc-STREAM-pK on the server.  Give each partition to exactly
one worker (--partitions; default all of them), and keep its --state with it: the
per-path fence that drops stale redeliveries lives there.  Or run every worker with
--partitions auto: each takes free partitions up to its fair share by leases in the
key-value bucket fc-STREAM-leases (--lease), and the fence is shared in fc-STREAM-fence,
so the partitions of a worker that dies for good are taken over by the others within
the lease and a third of it.

output: events go to stdout (or --output FILE|FIFO), one JSON object per line, with
a hop of this stage (docs/durability.md): the next stage acknowledges them here.

{AUTH_EPILOG}

exit status: 0 done (--idle-exit), 2 usage, 3 configuration (a stream not made by
File Conveyor, --partitions it does not have, a partition another process already
consumes, the NATS client not installed, a login the server refuses, a key file
others may read), 4 the next stage did not acknowledge within --drain-timeout,
130/143 stopped by a signal, 141 the reader went away."""


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-consume", DESCRIPTION, EPILOG)
    p.add_argument("url", metavar="nats://HOST:PORT/STREAM", help="the server and the stream (default stream FC)")
    g = p.add_argument_group("the broker")
    g.add_argument(
        "--partitions",
        metavar="LIST",
        help="the partitions this worker owns, e.g. 0-3,6 (default all); 'auto': a fair share, by leases",
    )
    g.add_argument(
        "--lease",
        type=seconds,
        default=15.0,
        metavar="SECONDS",
        help="with --partitions auto, when the lease bucket is made: how long a lease lasts unrenewed (default "
        "15; renewed every third of it; a dead worker's partitions are taken over within 4/3 of it)",
    )
    g.add_argument(
        "--ack-wait",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="when a partition's consumer is made: how long the server waits for a sign of life before it "
        "delivers a message again to whoever pulls (default 30; fc-consume says 'in progress' every third of it)",
    )
    g.add_argument(
        "--max-pending",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="when a partition's consumer is made: messages delivered and not yet acknowledged, at most "
        "(default 20000); a message counts until the worker's last stage has its line",
    )
    g.add_argument(
        "--idle-exit",
        type=seconds,
        metavar="SECONDS",
        help="end the input once SECONDS have passed with no new message and none held unacknowledged, then "
        "finish as a stage whose input ended (cron runs, tests); default: run until stopped",
    )
    add_auth_arguments(p)
    add_stage_arguments(p, "fc-consume")
    return p


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if args.input is not None:
        raise UsageError("--input: fc-consume reads the broker, not a file")
    target = N.parse_url(args.url)
    auto = args.partitions == "auto"
    if args.partitions and not auto:
        N.parse_partitions(args.partitions)  # a usage error now, not once connected
    if auto and args.lease < 0.3:
        raise UsageError("--lease: at least 0.3 seconds")
    identity = repr((target.servers.rpartition("@")[2], target.stream, args.partitions, args.output))
    credentials, keys = auth_from_args(args, target, rep)
    broker = N.Broker(target, credentials=credentials)
    leases = Leases(broker, args.lease) if auto else None
    feed = Feed(
        broker,
        None if auto else args.partitions,
        args.ack_wait,
        args.max_pending,
        args.idle_exit,
        rep,
        leases=leases,
        keys=keys,
    )
    stage = ConsumeStage(broker, feed)
    status = run_stage_from_args(stage, args, Streams(feed, io.stdout, io.stderr), rep, stop, identity)  # type: ignore[arg-type]
    if feed.failure is not None:  # the stream is not what this worker was told (said once the stage is closed)
        raise feed.failure
    return status


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-consume", build_parser, body, argv, io)
