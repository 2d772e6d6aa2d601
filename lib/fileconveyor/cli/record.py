"""fc-record: keep the synced-files database that web applications read; pass every event on."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from .. import events as E
from ..delivery.writer import stdout_writer
from ..errors import ConfigError, Exit, UsageError
from ..records import locate, open_writer, shown
from ..report import Reporter
from ..stages.record.rows import ORDER_SKEW
from ..stages.record.stage import RecordStage
from ..stopping import Stopper
from . import _common
from ._common import Streams, seconds, source_roots
from ._stage import STAGE_EPILOG_IO, add_stage_arguments, run_stage_from_args

DESCRIPTION = """\
Record where each file went (fc-transport's events) in a SQLite database that keeps
the original File Conveyor's table synced_files(input_file, transported_file_basename,
url, server), and pass every event on.  Web applications (the Drupal CDN module),
fc-process's CSS URL updater and fc-verify read it; WAL mode means they never see
"database is locked" while fc-record writes.  With --db postgresql://... the same
tables live in PostgreSQL, one record that fc-record on many hosts writes and every
host reads (docs/scale-out.md)."""

EPILOG = f"""\
examples:
  fc-watch --scan-once site | fc-transport --to file:///srv/cdn --url https://cdn.example/ \\
      | fc-record --db synced_files.db
  sqlite3 synced_files.db 'SELECT * FROM synced_files'
  PGPASSFILE=/etc/fileconveyor/pgpass ... | fc-record --db postgresql://fc@db.example/cdn
  ... | fc-transport --to sftp://cdn/www --record-db synced.db | fc-record --db synced.db \\
      --delete-source-after 3600 --require-server cdn --source site=/srv/www
  fc-record --status --db synced.db --state-file ~/.local/state/fileconveyor/transport-*.db --json
  fc-record --db synced.db --import-db /old/fileconveyor/synced_files.db --source site=/srv/www
  fc-record --import-queue /old/fileconveyor/persistent_data.db --source site=/srv/www | fc-filter ... | ...

recording: created/modified events with a server and a url upsert the row of
(input_file, server); deleted events remove it; events with an "error" field go to
the table sync_failures and leave synced rows alone.  An event with an integer
"order" is applied only if no later one (larger order) was applied for that file
and server; an older one changes nothing (counted as "older than recorded").
An order is a time in microseconds since 1970 (fc-consume sets the broker's store
time) or a count far below one: a line whose order lies more than --order-skew
seconds past this host's clock is a bad line (reported with its line number,
skipped, acknowledged), because one such line, forged by any stage before
fc-record, made every later event of its file "older than recorded" for good
(in a shared PostgreSQL record, on every worker).  An order already recorded
past that limit (by an older version) is no fence: the file's next event is
applied and the record heals.  So a forged order holds a file back for
--order-skew seconds at most.

deleting sources after sync: with --delete-source-after SECONDS, a file is deleted
at the source that long after its version is synced to every --require-server
(default: every server seen so far), and only beneath a --source NAME=DIR (the
event's source is NAME, its root DIR), reached through real directories (no "..",
no symlinked directory), when it is still the version synced.  The schedule is the
table source_deletions and survives restarts.  A file modified meanwhile is not
deleted until its new version is synced.  Give fc-transport --record-db with the same database: it then keeps the
remote copies instead of propagating the deletion (transported "kept").

{STAGE_EPILOG_IO}

exit status: 0 done, 1 some events carried an error (recorded as failures) or input
lines were bad, 2 usage, 3 configuration (database, state file, a login refused),
4 try again later (the database server down or busy),
130/143 stopped by a signal (state committed), 141 the reader of stdout went away."""


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-record", DESCRIPTION, EPILOG)
    p.add_argument(
        "--db",
        metavar="FILE|URL",
        help="the synced-files database: a SQLite file (created if missing) or a postgresql://[user@]host[:port]/"
        "dbname URL (its tables are created; give the password in PGPASSFILE or PGPASSWORD, not in the URL)",
    )
    p.add_argument(
        "--order-skew",
        type=seconds,
        default=ORDER_SKEW,
        metavar="SECONDS",
        help="how far an event's order (microseconds since 1970) may lie past this host's clock: a larger one is a "
        f"bad line, a larger one recorded is no fence (default {ORDER_SKEW:g}; the clocks of the broker and the "
        "hosts of fc-record must agree within it)",
    )
    g = p.add_argument_group("deleting sources after sync")
    g.add_argument(
        "--delete-source-after",
        type=seconds,
        metavar="SECONDS",
        help="delete each synced source file this long after it is synced everywhere",
    )
    g.add_argument(
        "--require-server",
        action="append",
        default=[],
        metavar="NAME",
        help="a server a file must be synced to before it is deleted (repeatable)",
    )
    g.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a source tree as given to fc-watch (repeatable): needed with --delete-source-after, which deletes "
        "only beneath these, only files of events whose source is NAME and root is DIR; with --import-*: the "
        "trees the old paths are under",
    )
    m = p.add_argument_group("other modes (one-shot, no events read)")
    m.add_argument(
        "--status", action="store_true", help="print counts: synced per server, failed, scheduled and done deletions"
    )
    m.add_argument(
        "--state-file",
        action="append",
        default=[],
        metavar="FILE",
        help="with --status: also the queue depth of this stage state file (repeatable; --state counts too)",
    )
    m.add_argument("--json", action="store_true", help="with --status: print JSON")
    m.add_argument(
        "--import-db", metavar="OLD_DB", help="import the rows of the old daemon's synced_files.db into --db"
    )
    m.add_argument(
        "--import-queue", metavar="OLD_DB", help="print the old daemon's unsynced queue (persistent_data.db) as events"
    )
    add_stage_arguments(p, "fc-record", status=False)
    return p


def _check(args: argparse.Namespace) -> None:
    modes = [m for m in ("status", "import_db", "import_queue") if getattr(args, m)]
    if len(modes) > 1:
        raise UsageError("--status, --import-db and --import-queue are separate runs: give one")
    if args.require_server and args.delete_source_after is None:
        raise UsageError("--require-server only matters with --delete-source-after")
    if (args.json or args.state_file) and not args.status:
        raise UsageError("--json and --state-file go with --status")
    if args.source and not (args.import_db or args.import_queue or args.delete_source_after is not None):
        raise UsageError("--source goes with --delete-source-after, --import-db or --import-queue")
    if args.delete_source_after is not None and not args.source:
        raise UsageError(
            "--delete-source-after needs --source NAME=DIR for each source tree it may delete in, as given to "
            "fc-watch (events are not trusted to say where to delete)"
        )
    if args.import_queue and not args.source:
        raise UsageError("--import-queue needs --source NAME=DIR for each source tree (events carry root and rel)")
    if not args.db and not args.import_queue and not (args.status and (args.state_file or args.state)):
        raise UsageError("give --db FILE or --db postgresql://..., the synced-files database")


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    _check(args)
    if args.status:
        from ..stages.record.status import format_status, status  # modes of their own: not every run's imports

        st = status(args.db, [*([str(args.state)] if args.state else []), *args.state_file])
        text = json.dumps(st, indent=2) + "\n" if args.json else format_status(st)
        io.stdout.write(text.encode())
        io.stdout.flush()
        return Exit.OK
    if args.import_db:
        from ..stages.record.old_daemon import import_synced

        rec = open_writer(args.db)
        try:
            n = import_synced(args.import_db, rec, source_roots(args.source))
        finally:
            rec.close()
        per = ", ".join(f"{s} {c}" for s, c in sorted(n.per_server.items()))
        if not args.quiet:
            kept = f"{n.kept} already in {shown(args.db)} kept"
            io.stderr.write(f"fc-record: imported {n.imported} row(s) ({per or 'none'}); {kept}\n")
        return Exit.OK
    if args.import_queue:
        return _import_queue(args, io, rep)
    sources = source_roots(args.source)
    for src in sources:  # else every deletion due would be dropped as "gone already"
        if not os.path.isdir(src.root):
            raise ConfigError(f"--source {src.name}={os.fsdecode(src.root)}: not a directory")
    stage = RecordStage(
        locate(args.db),
        delete_after=args.delete_source_after,
        require=args.require_server,
        sources=sources,
        drain=args.drain_timeout,
        stopped=lambda: stop.requested,
        order_skew=args.order_skew,
    )
    identity = repr((shown(locate(args.db)), args.input, args.output))  # a new password keeps the state
    return run_stage_from_args(stage, args, io, rep, stop, identity)


def _import_queue(args: argparse.Namespace, io: Streams, rep: Reporter) -> int:
    from ..stages.record.old_daemon import QueueCounts, queue_events

    counts = QueueCounts()
    writer = stdout_writer(io.stdout)
    for ev in queue_events(args.import_queue, source_roots(args.source), counts):
        writer.add(E.encode(ev))
        if writer.pending >= 1000:
            writer.flush()
    writer.flush()
    for why in counts.refused:
        rep.error(f"{args.import_queue}: refused item: {why}")
    if counts.outside:
        rep.warn(f"{counts.outside} queued path(s) are under no --source and were left out")
    for table, n in counts.not_imported.items():
        rep.warn(f"{n} item(s) of {table} not imported: the old daemon scheduled files of every rule for deletion")
    rep.info(f"{counts.events} event(s) from {args.import_queue}")
    return Exit.EVENTS_FAILED if counts.refused else Exit.OK


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-record", build_parser, body, argv, io)
