"""fc-transport: upload created/modified files to every destination, delete deleted ones there."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..errors import UsageError
from ..report import Reporter
from ..stages.transport.dest import list_transporters, targets_from
from ..stages.transport.stage import TransportStage
from ..stopping import Stopper
from . import _common
from ._common import Streams, add_read_sources, seconds, source_roots
from ._stage import STAGE_EPILOG_IO, add_stage_arguments, print_status, run_stage_from_args

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
What is read: "path" only when it is root + rel; opened beneath root (a symlink
leading out of it is refused) and only when it is still the file the event
describes (ino, size, mtime_ns); "file" only from a *.work folder of the state
directory or of a --work-dir.  A file that changed meanwhile, or while it was
sent, is skipped (its newer event follows) and never left half-published.
Output fields: server, remote, url, transported (uploaded, unchanged, deleted,
kept); on a permanent failure error and error_kind, and the event is kept for
--retry-failed.
Transient failures (timeouts, resets, server down) are retried with exponential
back-off and jitter, per destination; the others go on meanwhile.

--skip-unchanged: a file whose content the destination already holds is not
sent again; its event says transported "unchanged" (server, remote and url as
for an upload, so fc-record records it).  s3:// and cf:// compare the SHA-256
fc-transport stores in the object's metadata (x-amz-meta-fc-sha256), else the
ETag of an object uploaded in one PUT (a multipart ETag is no MD5), one HEAD
request per file; cloudfiles:// compares the MD5 ETag; file:// compares sizes,
then bytes.  ftp:// and sftp:// cannot tell without downloading the file: every
file is sent there (a warning says so).  Changed settings (cache_control, acl)
are not applied to unchanged files.

--delete-old-after: when a file's remote name changed (unique_filename), the old
name is deleted this long after the new upload, and reported by an event of its
own: kind "modified", transported "deleted", superseded true, remote the old
name (fc-record leaves the row of the current name alone).  Pending deletions
live in the state file and survive a restart; those due within the drain time
are carried out before fc-transport exits; if some are left, it exits with
status 4 (the next run does them).

cf:// changed and deleted paths are invalidated on CloudFront in batches (one
request per 1,000 paths, or after invalidate_after seconds); they are committed
to the state file with the event and sent again after a crash or restart.
"fc-transport create-distribution BUCKET" creates a distribution for a bucket
and waits until it is deployed (fc-transport create-distribution --help).


{STAGE_EPILOG_IO}

exit status: 0 done, 1 some events failed (error events written) or input lines
were bad, 2 usage, 3 configuration (bad destination, unknown setting, state file,
a destination that refused the login at start: checked before any event is read),
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
        "--skip-unchanged",
        action="store_true",
        help="don't send a file whose content the destination already holds (s3, cf, cloudfiles, file; see below)",
    )
    g.add_argument(
        "--record-db",
        metavar="FILE|URL",
        help="fc-record's database, a file or a postgresql:// URL (read-only): deletions fc-record made at the "
        "source are not propagated",
    )
    g.add_argument(
        "--work-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="an fc-process --work-dir: processed files ('file') are sent only from its *.work folders "
        "(repeatable; the state directory always counts)",
    )
    add_read_sources(g)
    g.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="for fc-watch --follow-symlinks: read a file through a symlink leading out of its root, only when it "
        "is the file the event names (same ino and size)",
    )
    add_stage_arguments(p, "fc-transport")
    p.set_defaults(pieces=[])
    return p


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if args.list:
        io.stdout.write(list_transporters().encode())
        io.stdout.flush()
        return 0
    if args.stage_status and not args.pieces:
        # --status reads the state file alone: given with --state, it needs no destination (it said "no
        # destination: give --to URL"); without, the --to options are what name the default state file.
        if args.state:
            return print_status(args.state, io)
        raise UsageError("--status: give the --to options the stage runs with (they name its state file) or --state")
    if _common.readers_asked(args) and args.state and not args.pieces:  # as --status: the state file alone
        return _common.readers_command(args.state, args, io)
    targets = targets_from(args.pieces, skip_unchanged=args.skip_unchanged, warn=rep.warn)
    stage = TransportStage(
        targets,
        delete_old_after=args.delete_old_after,
        retry_failed=args.retry_failed,
        record_db=args.record_db,
        drain_timeout=args.drain_timeout,
        work_dirs=args.work_dir,
        sources=source_roots(args.source),
        follow_symlinks=args.follow_symlinks,
    )
    # One state file per set of destinations (no secrets: str(Destination) never shows them).
    identity = repr(sorted((t.name, str(t.dest)) for t in targets)) + repr((args.input, args.output))
    return run_stage_from_args(stage, args, io, rep, stop, identity)


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["create-distribution"]:
        return _common.run(
            "fc-transport create-distribution", build_distribution_parser, distribution_body, args[1:], io
        )
    return _common.run("fc-transport", build_parser, body, args, io)


# -- fc-transport create-distribution --------------------------------------------------------------

DISTRIBUTION_DESCRIPTION = """\
Create a CloudFront distribution that serves a bucket's files (the public-read
objects fc-transport uploads), wait until CloudFront has deployed it, and print
its id, domain name, origin and status, and the --to destination that uses it."""

DISTRIBUTION_EPILOG = """\
examples:
  fc-transport create-distribution my-assets
  fc-transport create-distribution my-assets --region eu-west-1 --cname static.example.com
  fc-transport create-distribution my-assets --no-wait --json

credentials: boto3's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE or --profile, an instance role); never on the command line.
A new distribution takes CloudFront 5 to 15 minutes to deploy; on a terminal a
progress line shows its status meanwhile.  --timeout gives up waiting (exit 4);
the distribution is created all the same and goes on deploying.

output (stdout): id, domain, origin, status and to, one "key  value" a line
(--json: one JSON object).  Then upload with
  fc-transport --to 'cf://BUCKET/static?distribution_id=ID'

exit status: 0 created (and deployed, unless --no-wait), 2 usage, 3 refused
(credentials, bucket name), 4 not deployed within --timeout, or CloudFront
unreachable: try again later, 130/143 interrupted while waiting."""


def build_distribution_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-transport create-distribution", DISTRIBUTION_DESCRIPTION, DISTRIBUTION_EPILOG)
    p.add_argument("bucket", metavar="BUCKET", help="the S3 bucket the distribution serves")
    p.add_argument(
        "--region", default=None, help="the bucket's region (default: boto3's configuration, else us-east-1)"
    )
    p.add_argument("--profile", default=None, help="the AWS profile holding the credentials")
    p.add_argument("--endpoint-url", default=None, metavar="URL", help="a CloudFront-compatible endpoint (tests)")
    p.add_argument(
        "--origin", default=None, metavar="DOMAIN", help="the origin's domain (default BUCKET.s3.REGION.amazonaws.com)"
    )
    p.add_argument("--cname", action="append", default=[], metavar="NAME", help="an alternate domain (repeatable)")
    p.add_argument("--comment", default="File Conveyor", help="the distribution's comment")
    p.add_argument("--no-wait", action="store_true", help="print the new distribution at once, without waiting")
    p.add_argument(
        "--timeout", type=seconds, default=1800.0, metavar="SECONDS", help="stop waiting after this long (default 1800)"
    )
    p.add_argument("--poll", type=seconds, default=20.0, metavar="SECONDS", help="time between status checks (20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of key/value lines")
    return p


def distribution_body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    from ..transporters.cf_setup import Distribution, NotDeployed, create_distribution
    from ..transporters.s3 import default_region

    region = args.region or default_region(args.profile) or "us-east-1"
    tty = io.stderr.isatty() and not args.quiet
    shown: list[str] = []

    def say(text: str) -> None:  # news for people, not a warning: plain "fc-transport create-distribution: ..."
        io.stderr.write(f"{rep.prog}: {text}\n")
        io.stderr.flush()

    def progress(dist: Distribution, waited: float) -> None:
        if args.quiet:
            return
        if waited == 0.0:
            say(f"created distribution {dist.id} ({dist.domain}) for origin {dist.origin}: {dist.status}")
            if not args.no_wait and dist.status != "Deployed":
                say("CloudFront takes some minutes to deploy it; waiting (--no-wait does not)")
            return
        text = f"{dist.id}: {dist.status} after {waited:.0f} s"
        if tty:  # one line redrawn in place, with moving dots
            rep.progress(text + " " + "." * (len(shown) % 4 + 1))
        elif not shown or shown[-1] != dist.status or len(shown) % 6 == 0:  # logs: on changes, and now and then
            say(text)
        shown.append(dist.status)

    status = 0
    try:
        dist = create_distribution(
            args.bucket,
            region=region,
            endpoint_url=args.endpoint_url,
            profile=args.profile,
            origin=args.origin,
            comment=args.comment,
            cnames=tuple(args.cname),
            wait=not args.no_wait,
            poll=args.poll,
            timeout=args.timeout,
            progress=progress,
            stopped=lambda: stop.requested,
        )
    except NotDeployed as exc:
        rep.end_progress()
        rep.error(str(exc))
        dist, status = exc.dist, int(exc.exit)  # type: ignore[attr-defined]
    rep.end_progress()
    fields = {"id": dist.id, "domain": dist.domain, "origin": dist.origin, "status": dist.status}
    fields["to"] = dist.spec(args.bucket)
    if args.json:
        text = json.dumps(fields) + "\n"
    else:
        text = "".join(f"{k:<7}{v}\n" for k, v in fields.items())
    io.stdout.write(text.encode())
    io.stdout.flush()
    return status
