"""fc-verify: check that every recorded file is at its destination, complete and current."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import events as E
from ..delivery.writer import stdout_writer
from ..errors import Exit
from ..report import Progress, Reporter
from ..stages.transport.dest import targets_from
from ..stages.verify.run import Run
from ..stages.verify.stage import HTTPChecker, Verifier, deleted_by_us, dumps, open_db
from ..stopping import Stopper
from . import _common
from ._common import Streams, positive_int, seconds

DESCRIPTION = """\
Check every file in fc-record's database: at its destination (the transporter's own
stat with --to, else an HTTP(S) request to its public URL) and against its source.
Problems are printed as JSON lines on stdout, a summary on stderr."""

EPILOG = """\
examples:
  fc-verify --db synced_files.db                      # by the public URLs
  fc-verify --db synced.db --to file:///srv/cdn --to sftp://me@cdn/www --jobs 16
  fc-verify --db synced.db --get --server cdn | jq -r 'select(.problem=="different") | .path'
  fc-verify --db synced.db --repair | fc-transport --to file:///srv/cdn --url https://cdn.example/ \\
      --record-db synced.db | fc-record --db synced.db

problems (the "problem" field of each line):
  missing    the source is there, the destination has no such file
  different  the remote size is not the size sent (truncated), its SHA-256 differs
             (--get, unprocessed files), or the source changed since it was synced
  stale      the source is gone but the record (and usually the remote file) is not;
             files fc-record deleted at the source after sync are not stale
  extra      (--find-extra) a file in a local destination that no record names
  error      the destination could not be asked (DNS, timeout, TLS, HTTP 5xx)

--repair prints, instead of the report, the events that fix what was found:
created/modified for missing and different files, deleted for stale ones.  Files
whose remote copy was made by processors must go through the same fc-process.

exit status: 0 all is well, 1 problems were found (or files could not be checked),
2 usage, 3 configuration (no such database, bad --to), 130/143 stopped by a signal,
141 the reader of stdout went away."""


class _Ordered(argparse.Action):
    """--url and --config belong to the --to before them, as in fc-transport."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        namespace.pieces = [*(getattr(namespace, "pieces", None) or []), (self.dest, values)]


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-verify", DESCRIPTION, EPILOG)
    p.add_argument(
        "--db",
        required=True,
        metavar="FILE|URL",
        help="fc-record's synced-files database, a file or a postgresql:// URL (read only)",
    )
    g = p.add_argument_group("destinations, as given to fc-transport (their files are checked by stat)")
    g.add_argument("--to", action=_Ordered, metavar="URL", help="a destination (repeatable), e.g. sftp://u@host/dir")
    g.add_argument("--url", action=_Ordered, metavar="BASE", help="the public base URL of the --to before it")
    g.add_argument("--config", action=_Ordered, metavar="FILE", help="key = value settings for the --to before it")
    p.add_argument(
        "--server", action="append", default=[], metavar="NAME", help="check only this server's files (repeatable)"
    )
    p.add_argument(
        "--check",
        choices=("auto", "stat", "http"),
        default="auto",
        help="auto: stat with --to, else the URL (default); stat or http only",
    )
    p.add_argument(
        "--get", action="store_true", help="download with GET instead of HEAD, and compare SHA-256 of unprocessed files"
    )
    p.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS", help="per request (default 30)")
    p.add_argument("--ca-file", metavar="FILE", help="also trust the CA certificates in FILE for HTTPS")
    p.add_argument("--jobs", type=positive_int, default=8, metavar="N", help="checks run at once (default 8)")
    p.add_argument(
        "--find-extra",
        action="store_true",
        help="also report files in local (file://) --to destinations that no record names",
    )
    p.add_argument("--repair", action="store_true", help="print the events that fix the problems instead of the report")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress line on stderr (default: when stderr is a terminal)",
    )
    return p


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    pieces = getattr(args, "pieces", None) or []
    targets = {t.name: t.dest for t in targets_from(pieces)} if pieces else {}
    db = open_db(args.db)
    verifier = Verifier(targets, HTTPChecker(args.timeout, args.get, args.ca_file), args.check, deleted_by_us(db))
    run = Run(verifier, args.repair)
    show = args.progress if args.progress is not None else (not args.quiet and io.stderr.isatty())
    progress = Progress(rep, bool(show))
    out = stdout_writer(io.stdout)
    try:
        for report in run.check(db, args.server, args.jobs, lambda: stop.requested):
            if report is not None:
                out.add(dumps(report))
                out.flush()
            progress.update(run.progress)
    finally:
        verifier.close()
        db.close()
    if args.find_extra:
        for report in run.extras(rep.warn):
            if not args.repair:
                out.add(dumps(report))
    for ev in run.repairs():
        out.add(E.encode(ev))
    out.flush()
    if run.unfixable:
        rep.warn(f"{run.unfixable} problem file(s) cannot be repaired by events (no source root/rel recorded)")
    if run.processed:
        rep.warn(f"{run.processed} repaired file(s) were processed: pipe the events through the same fc-process")
    progress.done(run.progress())
    if not args.quiet:
        rep.stderr.write(f"fc-verify: {run.summary()}\n")
    return Exit.OK if run.all_well else Exit.EVENTS_FAILED


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-verify", build_parser, body, argv, io)
