"""What every fc-* command shares: streams, messages, signals, and the one place
where exceptions become an error message and an exit status."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from .. import __version__
from ..delivery.streams import MAX_LINE_BYTES
from ..errors import Exit, FCError, UsageError
from ..report import Reporter, route_logging
from ..stopping import Stopper

if TYPE_CHECKING:
    from ..roots import Source


class Streams:
    """The command's streams: stdin/stdout carry events as bytes, stderr is for people."""

    def __init__(self, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None, stderr: IO[str] | None = None):
        self.stdin: IO[bytes] = sys.stdin.buffer if stdin is None else stdin
        self.stdout: IO[bytes] = sys.stdout.buffer if stdout is None else stdout
        self.stderr: IO[str] = sys.stderr if stderr is None else stderr


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's, with the terminal's width found here: argparse imports shutil for it (and with it bz2, lzma,
    fnmatch: 0.6 MB of RSS) each time a flag is added, in every stage of every pipeline (issue 18, memory)."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None, **kw: Any
    ):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width, **kw)


def _columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else the width of stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every command has."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s (File Conveyor) {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say more on stderr (repeat for debug output)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def source_roots(specs: Sequence[str]) -> list[Source]:
    """``--source NAME=DIR`` flags (fc-record, fc-transport): the source trees as given to fc-watch."""
    from ..roots import Source

    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--source {spec!r}: expected NAME=DIR, as given to fc-watch")
        out.append(Source(name, os.fsencode(os.path.abspath(os.path.expanduser(path)))))
    return out


def add_read_sources(g: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--source for the stages that read an event's file (fc-process, fc-transport): the roots they may read."""
    g.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a source tree as given to fc-watch (repeatable): files are then read only beneath these, for events "
        "whose source is NAME and root is DIR (fc-conveyor passes them)",
    )


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_max_line_bytes(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--max-line-bytes, for every command that reads event lines."""
    p.add_argument(
        "--max-line-bytes",
        type=positive_int,
        default=MAX_LINE_BYTES,
        metavar="N",
        help=f"a longer input line is reported and skipped without being held in memory (default {MAX_LINE_BYTES})",
    )


def add_reader_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup, prog: str) -> None:
    """--readers and --forget-reader, for every command that writes events to File Conveyor readers."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--readers",
        action="store_true",
        help="list the File Conveyor readers the state file knows (their state file, the last line they "
        "acknowledged, when last seen, whether their state file is still there) and exit",
    )
    g.add_argument(
        "--forget-reader",
        metavar="PATH",
        help="forget the reader whose state file is PATH (see --readers): the lines after its acknowledgement are "
        f"no longer kept nor re-sent for it; refused while that reader runs; safe while {prog} runs",
    )


def readers_asked(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "readers", False)) or getattr(args, "forget_reader", None) is not None


def readers_command(state: str | os.PathLike[str], args: argparse.Namespace, io: Streams) -> int:
    """Do what --readers or --forget-reader asks (delivery/acks_admin.py) on the writer's state file ``state``."""
    from ..delivery import acks_admin  # only for these flags

    io.stdout.write(acks_admin.command(state, args.forget_reader).encode())
    io.stdout.flush()
    return Exit.OK


class _ArgError(Exception):
    pass


def _exit_on_error(p: argparse.ArgumentParser, stderr: IO[str]) -> None:
    """Make argparse report usage errors through our streams and exit status."""

    def error(message: str) -> None:
        stderr.write(p.format_usage())
        stderr.write(f"{p.prog}: error: {message}\n")
        raise _ArgError

    p.error = error  # type: ignore[method-assign]


def run(
    prog: str,
    build: Callable[[], argparse.ArgumentParser],
    body: Callable[[argparse.Namespace, Streams, Reporter, Stopper], int],
    argv: Sequence[str] | None,
    io: Streams | None,
) -> int:
    """Parse flags, run ``body``, and turn whatever happens into an exit status."""
    io = io or Streams()
    p = build()
    _exit_on_error(p, io.stderr)
    try:
        args = p.parse_args(argv)
    except _ArgError:
        return Exit.USAGE
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    reporter = Reporter(prog, io.stderr, -1 if args.quiet else args.verbose)
    route_logging(reporter)
    stopper = Stopper()
    in_main_thread = _is_main_thread()
    if in_main_thread:
        stopper.install()
    try:
        status = body(args, io, reporter, stopper)
        if stopper.signum is not None:
            return 128 + stopper.signum
        return status
    except BrokenPipeError:
        _silence_stdout(io)
        return Exit.BROKEN_PIPE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except FCError as exc:
        reporter.error(str(exc))
        return exc.exit
    except sqlite3.DatabaseError as exc:
        reporter.error(f"state database: {exc}")
        return Exit.RETRY if "full" in str(exc) or "locked" in str(exc) else Exit.CONFIG
    except OSError as exc:
        reporter.error(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return Exit.RETRY
    except Exception:  # a bug: say so plainly, with the traceback for the report
        import traceback  # only on a failure: not a cost of every start

        reporter.error("unexpected failure (this is a bug, please report it):\n" + traceback.format_exc())
        return Exit.FATAL
    finally:
        reporter.end_progress()
        if in_main_thread:
            stopper.uninstall()


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _silence_stdout(io: Streams) -> None:
    """After EPIPE, point fd 1 at /dev/null so Python's exit-time flush stays quiet."""
    if io.stdout is getattr(sys.stdout, "buffer", None):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except OSError:
            pass
