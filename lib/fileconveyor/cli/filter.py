"""fc-filter: pass through the events that match a rule's conditions, drop the rest."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..errors import ConfigError, Exit
from ..report import Reporter
from ..stages.filter.run import pass_through, passes_through, unfinished
from ..stages.filter.stage import Conditions, FilterStage, parse_size, split_list
from ..stopping import Stopper
from . import _common
from ._common import Streams
from ._stage import add_stage_arguments, default_state, run_stage_from_args

DESCRIPTION = """\
Pass through the events whose file matches every condition given (AND), drop the
others.  These are the conditions of a File Conveyor rule's <filter>."""

EPILOG = """\
examples:
  fc-watch --scan-once site | fc-filter --extensions css:js:png:jpg:gif
  fc-watch site | fc-filter --paths images:modules/foo --ignore-dirs CVS:.svn | ...
  fc-watch site | fc-filter --pattern '.*/([a-zA-Z\\-_ ])+720([a-zA-Z\\-_ ])*\\.[a-zA-Z]{3}$'
  fc-watch site | fc-filter --extensions mov:avi --min-size 1M

matching:
  --paths     directories relative to the source root, whole path components,
              recursively: "css" covers css/a.css and css/x/b.css, not precss/a.css.
  --extensions  the end of the file name after a dot (tar.gz works); any case
              unless --case-sensitive.
  --pattern   a Python regular expression matched with re.match against the
              absolute path: anchored at the start, not at the end (begin it with
              ".*" to match anywhere).
  sizes       --min-size and --max-size are inclusive and take k, M, G suffixes
              (powers of 1024).  deleted events have no size and always pass them.

input and output: events come from stdin (or --input FILE|FIFO) and go to stdout
(or --output FILE|FIFO: a FIFO waits for a reader, and for a new one if the reader
goes away), one JSON object per line (docs/events.md).  A line that passes is
written byte for byte as it came, unknown fields and "hop" included.  A bad line
(not an event, wrong types, longer than --max-line-bytes) is reported on stderr
with its line number and skipped (exit status 1 at the end).

durability: into a File Conveyor stage (or a terminal, a file, --output FIFO)
fc-filter passes lines through and keeps no state (like fc-tee): the stage after
it acknowledges straight to the stage before it (fc-watch), which re-sends what
was not acknowledged when a stage in between is killed and restarted
(docs/durability.md).  Into a pipe read by anything else (| jq, | head, a script)
it keeps its lines in its state file (--state) and counts as delivered what its
reader has read, so the next run sends only what was not.  A state file that
still holds lines its reader has not taken is used once more, with a warning.

exit status: 0 done, 1 some input lines were bad, 2 usage (an invalid condition),
3 configuration or state file, 4 try again later, 130/143 stopped by a signal,
141 the reader of stdout went away."""


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-filter", DESCRIPTION, EPILOG)
    g = p.add_argument_group("conditions (all must hold)")
    g.add_argument("--paths", metavar="DIR:DIR", help="only files under these directories (relative to the root)")
    g.add_argument("--extensions", metavar="EXT:EXT", help="only files with these extensions, e.g. css:js:tar.gz")
    g.add_argument("--case-sensitive", action="store_true", help="match --extensions in exact case")
    g.add_argument("--ignore-dirs", metavar="DIR:DIR", help="drop files with a directory of one of these names")
    g.add_argument("--pattern", metavar="REGEX", help="only absolute paths that re.match this regular expression")
    g.add_argument("--min-size", type=_size, metavar="SIZE", help="only files of at least SIZE bytes")
    g.add_argument("--max-size", type=_size, metavar="SIZE", help="only files of at most SIZE bytes")
    g.add_argument("--invert", action="store_true", help="pass the events that do NOT match, drop the ones that do")
    add_stage_arguments(p, "fc-filter")
    return p


def conditions_from(args: argparse.Namespace) -> Conditions:
    return Conditions(
        paths=split_list("--paths", args.paths) if args.paths is not None else (),
        extensions=split_list("--extensions", args.extensions, no_slash=True, no_dot=True)
        if args.extensions is not None
        else (),
        case_sensitive=args.case_sensitive,
        ignore_dirs=split_list("--ignore-dirs", args.ignore_dirs, no_slash=True)
        if args.ignore_dirs is not None
        else (),
        pattern=args.pattern,
        min_size=args.min_size,
        max_size=args.max_size,
    )


def identity(args: argparse.Namespace) -> str:
    """What names the default state file (one per set of options): the one a durable fc-filter of an earlier
    version used, looked for by --status and at start (stages/filter/run.py)."""
    return repr(
        (
            args.paths,
            args.extensions,
            args.case_sensitive,
            args.ignore_dirs,
            args.pattern,
            args.min_size,
            args.max_size,
            args.invert,
            args.input,
            args.output,
        )
    )


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    stage = FilterStage(conditions_from(args), args.invert)
    state = args.state or default_state(stage.name, identity(args))
    if getattr(args, "stage_status", False):
        note = "fc-filter passes lines through and keeps no queue"
        if not state.exists():
            io.stdout.write(f"{note} (no state file at {state})\n".encode())
            io.stdout.flush()
            return Exit.OK
        # a state file of the durable fc-filter of earlier versions: what it holds, as before
        status = run_stage_from_args(stage, args, io, rep, stop, identity(args))
        io.stdout.write(
            f"{note}; the state file above, of an earlier version, is used while it holds lines not taken\n".encode()
        )
        io.stdout.flush()
        return status
    if _common.readers_asked(args):
        if not state.exists():  # its readers acknowledge to the writer before it (fc-watch --readers)
            raise ConfigError(
                f"{state}: no such state file; fc-filter passes lines through, and its readers register "
                "with the writer before it (fc-watch --readers)"
            )
        return _common.readers_command(state, args, io)  # an earlier version's durable fc-filter's state
    if not passes_through(args.output, io.stdout):
        # its reader is no File Conveyor stage (jq, head, a script): nobody after us acknowledges, so fc-filter
        # keeps its lines and judges delivery itself, as a durable stage (stages/filter/run.py)
        return run_stage_from_args(stage, args, io, rep, stop, identity(args))
    held = unfinished(state)
    if held:
        # lines its reader has not taken yet: run with it this once, so that nothing it holds is lost
        # (stages/filter/run.py)
        rep.warn(
            f"{state} holds {held} line(s) not yet taken by its reader (an earlier fc-filter's, or one that wrote "
            "to a reader that is no File Conveyor stage): running with that state file this once"
        )
        return run_stage_from_args(stage, args, io, rep, stop, identity(args))
    return pass_through(stage, args.input, args.output, io.stdin, io.stdout, rep, stop, args.max_line_bytes)


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    return _common.run("fc-filter", build_parser, body, argv, io)
