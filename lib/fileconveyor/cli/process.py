"""fc-process: run each file through a processor chain; add the file to transport and its name."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from ..errors import ConfigError, FCError, UsageError
from ..processors import PROCESSORS, Processor, ToolMissing, create
from ..report import Reporter
from ..stages.process.stage import ProcessStage, Settings
from ..stopping import Stopper
from . import _common
from ._common import Streams
from ._stage import STAGE_EPILOG_IO, add_stage_arguments, run_stage_from_args

DESCRIPTION = """\
Run each event's file through a chain of processors (optimise images, minify CSS
and JS, unique file names, ...) and pass the event on with the file to transport
("file", in a work directory, when the content changed) and its final base name
("name").  deleted events pass through with the last name emitted for their path."""

EPILOG = f"""\
examples:
  fc-watch --scan-once site | fc-filter --extensions css:js:png:jpg:gif \\
    | fc-process --chain image_optimizer.Max,unique_filename.MD5
  fc-process --chain filename.SpacesToUnderscores --processor 'cmd:optipng -quiet -out {{out}} {{in}}'
  fc-process --chain link_updater.CSSURLUpdater --server cdn --record-db synced.db \\
    --document-root /srv/www --base-path /site/
  fc-process --list          # every processor, and whether its tool is installed

processors:
  --chain A,B and --processor X add to one chain, in the order given.  A
  processor is a built-in name (fc-process --list), an installed plugin's name,
  a Python class as package.module:Class, or cmd:COMMAND, any command run
  without a shell with {{in}} and {{out}} replaced by file paths (no {{out}}: its
  stdout is the result).  Processors skip files they do not handle (by
  extension); such events pass through with "name" added.

per server: link_updater.CSSURLUpdater writes each destination's URLs into the
  CSS, so its output differs per destination: run one fc-process per destination
  server, each with --server NAME (and fc-record's --record-db).  A CSS file whose
  references are not synced yet is retried later (--retry-delay, doubling), not
  failed; a reference still not synced after --reference-wait (60 s) is left as
  it was, with a warning.  When a referenced file gets a new name (unique_filename),
  every CSS file that references it is processed again (docs/css.md).

errors: a processor failing on a file passes the event on with an "error" field
  (exit status 1 at the end); a file gone before it was processed is dropped with
  a note (its deleted event follows); a missing tool stops fc-process at start and
  says what to install.  Work files are removed once the next File Conveyor stage
  has acknowledged the line naming them.

{STAGE_EPILOG_IO}

exit status: 0 done, 1 some events failed or input lines were bad, 2 usage,
3 configuration (unknown processor, missing tool, state file), 4 try again later
(deferred events left queued), 130/143 stopped by a signal (state committed),
141 the reader of stdout went away."""


class _AddChain(argparse.Action):
    """--chain and --processor append to one list, so their order is kept."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        specs = list(getattr(namespace, "specs", None) or [])
        if option_string == "--chain":
            parts = [p.strip() for p in str(values).split(",")]
            if not all(parts):
                parser.error(f"--chain {values!r}: empty processor name (separate names with single commas)")
            specs.extend(parts)
        else:
            specs.append(str(values))
        namespace.specs = specs


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-process", DESCRIPTION, EPILOG)
    p.set_defaults(specs=[])
    g = p.add_argument_group("the chain")
    g.add_argument("--chain", action=_AddChain, metavar="A,B", help="processors to run, comma-separated, in order")
    g.add_argument("--processor", action=_AddChain, metavar="SPEC", help="one more processor (repeatable; cmd:...)")
    g.add_argument("--list", action="store_true", help="list every processor and whether its tool is installed")
    g.add_argument("--jobs", type=_common.positive_int, metavar="N", help="files processed at once (default: cores)")
    g.add_argument("--work-dir", metavar="DIR", help="where processed files wait (default: next to the state file)")
    g.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="for fc-watch --follow-symlinks: read a file through a symlink leading out of its root, only when it "
        "is the file the event names (same ino and size)",
    )
    _common.add_read_sources(g)
    g.add_argument(
        "--retry-delay",
        type=_common.seconds,
        default=5.0,
        metavar="SECONDS",
        help="first wait before retrying a deferred event (default 5; doubles each time, up to 600)",
    )
    g = p.add_argument_group("link_updater.CSSURLUpdater (run one fc-process per destination server)")
    g.add_argument("--server", metavar="NAME", help="the destination server this fc-process processes for")
    g.add_argument(
        "--record-db",
        metavar="FILE|URL",
        help="fc-record's database (a file or a postgresql:// URL, read only) with the synced URLs",
    )
    g.add_argument("--document-root", metavar="DIR", help="the directory root-relative URLs start from")
    g.add_argument("--base-path", metavar="PATH", help="the URL path the source is served at, e.g. /site/")
    g.add_argument(
        "--reference-wait",
        type=_common.seconds,
        metavar="SECONDS",
        help="how long a CSS file waits for a referenced file to be synced, then leaves that reference as it was"
        " with a warning (default 60)",
    )
    add_stage_arguments(p, "fc-process")
    return p


def build_chain(specs: Sequence[str]) -> list[Processor]:
    """Processors from their specs; ToolMissing (exit 3) naming every tool to install."""
    chain = [create(spec) for spec in specs]
    missing = list(dict.fromkeys(hint for proc in chain for hint in proc.missing_tools()))
    if missing:
        raise ToolMissing("missing tools, install them first:\n  " + "\n  ".join(missing))
    return chain


def list_processors(io: Streams) -> int:
    """One line per processor: name, whether its tools are installed, what it does."""
    lines = []
    for name in PROCESSORS.names():
        try:
            cls = PROCESSORS.get(name)
            missing = cls().missing_tools()
            tools = ", ".join(t.command for t in cls.tools)
            state = "MISSING" if missing else ("installed" if tools else "-")
            extra = f" [needs {'; '.join(missing)}]" if missing else (f" [uses {tools}]" if tools else "")
            lines.append(f"{name:46} {state:9} {cls.description}{extra}")
        except FCError as exc:
            lines.append(f"{name:46} {'MISSING':9} not available: {exc}")
    lines.append(f"{'cmd:COMMAND':46} {'-':9} runs any command on the file, {{in}} and {{out}} replaced (no shell)")
    header = f"{'PROCESSOR':46} {'TOOLS':9} DESCRIPTION"
    aliases = ", ".join(f"{a} = {c}" for a, c in PROCESSORS.aliases.items())
    io.stdout.write("\n".join([header, *lines, "", f"aliases: {aliases}", ""]).encode())
    io.stdout.flush()
    return 0


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if args.list:
        return list_processors(io)
    if not args.specs:
        raise UsageError("give the processors to run: --chain A,B or --processor X (fc-process --list shows them)")
    chain = build_chain(args.specs)
    per_server = [proc.name for proc in chain if proc.per_server]
    if per_server and not args.server:
        raise UsageError(
            f"{', '.join(per_server)} writes per-server output: run one fc-process per destination "
            "server, each with --server NAME"
        )
    if per_server and not args.record_db:
        raise UsageError(f"{', '.join(per_server)} looks URLs up in fc-record's database: give --record-db FILE")
    if args.record_db:  # the records package for the runs that read it only (start-up time)
        from ..records import is_url, locate, open_reader
    if args.record_db and is_url(args.record_db):
        open_reader(args.record_db).close()  # a refused login stops us now (exit 3), not every stylesheet later
    if args.base_path is not None and not args.base_path.startswith("/"):
        raise UsageError(f"--base-path {args.base_path!r}: a URL path starts with / (e.g. /site/)")
    if args.document_root is not None and not os.path.isdir(args.document_root):
        raise ConfigError(f"--document-root {args.document_root}: not a directory")
    options = {
        k: v
        for k, v in {
            "server": args.server,
            "synced_db": locate(args.record_db) if args.record_db else None,
            "document_root": os.path.abspath(args.document_root) if args.document_root else None,
            "base_path": args.base_path,
        }.items()
        if v is not None
    }
    settings = Settings(
        jobs=args.jobs or os.cpu_count() or 1,
        work_dir=os.path.abspath(args.work_dir) if args.work_dir else None,
        options=options,
        retry_delay=args.retry_delay,
        reference_wait=args.reference_wait,
        follow_symlinks=args.follow_symlinks,
        sources=_common.source_roots(args.source),
    )
    # the state file is per configuration: jobs, delays and the work dir do not change what is computed
    identity = repr((args.specs, sorted(options.items()), args.input, args.output))
    return run_stage_from_args(ProcessStage(chain, settings), args, io, rep, stop, identity)


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-process", build_parser, body, argv, io)
