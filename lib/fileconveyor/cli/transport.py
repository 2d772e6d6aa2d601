"""fc-transport: upload created/modified files to every destination, delete deleted ones there."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..stages.transport import TransportStage
from ..stages.transport_dest import list_transporters, targets_from
from . import _common
from ._common import Reporter, Stopper, Streams, seconds
from ._stage import STAGE_EPILOG_IO, add_stage_arguments, run_stage_from_args

DESCRIPTION = """\
Put each created or modified file on every destination (atomically: a temporary
name, then a rename), delete deleted files there, and emit one event per
destination with the server, the remote path and the public URL added."""

EPILOG = f"""\
examples:
  fc-watch --scan-once site | fc-transport --to file:///tmp/cdn --url http://cdn.example/
  fc-watch site | fc-process ... | fc-transport \\
      --to 'sftp://deploy@static.example:2222/var/www/static?key_file=~/.ssh/deploy' \\
      --url https://static.example/ --to ftp://www@ftp.example/htdocs --url http://cdn2.example/
  FC_PASSWORD=... fc-transport --to ftps://www@host/ --url https://cdn.example/ < events.jsonl
  fc-transport --to file:///srv/cdn --config cdn.conf --retry-failed < /dev/null
  fc-transport --list

destinations: --to URL (file:///dir, ftp://user@host/dir, ftps://..., sftp://user@host:port/dir,
or a third-party transporter's scheme); settings as ?key=value (see --list), e.g.
?connections=8&timeout=20&name=cdn1.  --url and --config after a --to belong to it.
A --config file holds key = value lines (to, url, name, password, any setting);
passwords only in FC_<NAME>_PASSWORD / FC_PASSWORD or in a config file only you
can read: never on the command line.

where files go: destination root + dirname(rel) + name (the processed base name,
else the source's); the file sent is "file" (fc-process's output) else "path".
Output fields: server, remote, url, transported (uploaded, deleted, kept); on a
permanent failure error and error_kind, and the event is kept for --retry-failed.
Transient failures (timeouts, resets, server down) are retried with exponential
back-off and jitter, per destination; the others go on meanwhile.

{STAGE_EPILOG_IO}

exit status: 0 done, 1 some events failed (error events written) or input lines
were bad, 2 usage, 3 configuration (bad destination, unknown setting, state file),
4 work is still queued for a destination that is down (run again later; nothing
is lost), 130/143 stopped by a signal (state committed), 141 the reader of stdout
went away."""


class _Ordered(argparse.Action):
    """Keeps --to, --url, --config, --set and --endpoint-url in command-line order: each belongs to the --to
    before it."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        pieces = getattr(namespace, "pieces", None) or []
        pieces.append((self.dest, values))
        namespace.pieces = pieces


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-transport", DESCRIPTION, EPILOG)
    g = p.add_argument_group("destinations")
    g.add_argument("--to", action=_Ordered, metavar="URL", help="a destination (repeatable), e.g. sftp://u@host/dir")
    g.add_argument("--url", action=_Ordered, metavar="BASE", help="the public base URL of the --to before it")
    g.add_argument(
        "--config", action=_Ordered, metavar="FILE", help="key = value settings for the --to before it (or a new one)"
    )
    g.add_argument(
        "--set",
        action=_Ordered,
        metavar="KEY=VALUE",
        help="a setting of the --to before it, as ?KEY=VALUE in its URL (repeatable; never a password)",
    )
    g.add_argument(
        "--endpoint-url",
        action=_Ordered,
        metavar="URL",
        help="for s3:// and cf://: the endpoint of an S3-compatible store (MinIO, R2, ...) for the --to before it",
    )
    g.add_argument("--list", action="store_true", help="list the transporters and their settings, then exit")
    g = p.add_argument_group("behaviour")
    g.add_argument(
        "--delete-old-after",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="when a file's remote name changed, delete the old one this long after the new upload (default 0)",
    )
    g.add_argument(
        "--retry-failed", action="store_true", help="first queue again the events that failed for good earlier"
    )
    g.add_argument(
        "--record-db",
        metavar="FILE",
        help="fc-record's database (read-only): deletions fc-record made at the source are not propagated",
    )
    add_stage_arguments(p, "fc-transport")
    p.set_defaults(pieces=[])
    return p


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if args.list:
        io.stdout.write(list_transporters().encode())
        io.stdout.flush()
        return 0
    targets = targets_from(args.pieces)
    stage = TransportStage(
        targets,
        delete_old_after=args.delete_old_after,
        retry_failed=args.retry_failed,
        record_db=args.record_db,
        drain_timeout=args.drain_timeout,
    )
    # One state file per set of destinations (no secrets: str(Destination) never shows them).
    identity = repr(sorted((t.name, str(t.dest)) for t in targets)) + repr((args.input, args.output))
    return run_stage_from_args(stage, args, io, rep, stop, identity)


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-transport", build_parser, body, argv, io)
