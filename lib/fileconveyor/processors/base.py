"""The interface every processor shares, and the helpers they use.

A processor turns one file into another (or passes it through) and may change its
base name, never its directory.  fc-process runs a chain of them per event; each
step gets a Context and returns an Output.  All outputs are written inside the
event's private work directory, so concurrent chains (and per-server chains of the
same file) never overwrite each other.

External tools always run without a shell, with an argument list and a timeout.
A tool gets the input's own path only when that path is plain (absolute, ASCII
letters, digits and ``._+-/`` only, ending in the extension the tool expects);
any other name is *staged*: a symlink ``step-N-in.png`` in the work directory
points to it.  A file name with spaces, quotes, glob characters, a newline or
bytes that are not UTF-8 then never reaches a tool at all (Java tools decode argv
with the locale and cannot open names that are not UTF-8; closure-compiler
expands globs), while most files need no extra file-system operation.  Steps
write ``step-N-...`` files in the event's work directory, not a directory each:
fc-process's own CPU per file counts against the bare tools (bench/process_bench.py).
"""

from __future__ import annotations

import itertools
import os
import re
import select
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import IO, Any, ClassVar, NamedTuple

from ..errors import ConfigError, FCError, RetryableError
from ..events import display


class ProcessorError(FCError):
    """Processing this file failed and retrying will not help (bad input, tool error)."""


class RetryLater(RetryableError):
    """Not possible yet, expected to work later (e.g. CSS references not synced yet)."""


class ToolMissing(ConfigError):
    """An external command a processor needs is not installed; says what to install."""


class Tool(NamedTuple):
    """An external command and where it comes from, for the start-up check."""

    command: str
    package: str  # the Debian package (or pip/npm package, see ``via``) providing it; "" if unknown
    via: str = "apt-get install"

    def hint(self) -> str:
        if not self.package:  # a user's own command: we cannot know its package
            return f"{self.command} (not found on PATH)"
        return f"{self.command} (install it with: {self.via} {self.package})"


def missing_tools(tools: Sequence[Tool]) -> list[str]:
    """One line per tool in ``tools`` that is not on PATH, saying what to install."""
    return [t.hint() for t in tools if shutil.which(t.command) is None]


class Output(NamedTuple):
    path: bytes  # the resulting file: the input itself (pass-through) or a file in the work dir
    basename: bytes  # the new base name (only the name: the directory never changes)


class Context:
    """What one processor step sees.

    ``input`` is the current file (the source file, or the previous step's output),
    ``original`` the source file's path, ``basename`` the current base name.
    ``options`` holds stage-wide settings: document_root, base_path, server,
    synced_db.  ``notes`` collects warnings for people (a tool's stderr on success).
    For link_updater: ``current_name(path)`` is the name fc-process last emitted for a
    source path (None: not known), ``waited`` how long this event has been deferred
    (seconds, by RetryLater), and ``references`` collects (source path, synced name)
    of the references a stylesheet's output uses.
    """

    def __init__(
        self,
        input: bytes,
        original: bytes,
        basename: bytes,
        work_dir: bytes,
        event: Mapping[str, Any] | None = None,
        options: Mapping[str, str] | None = None,
        notes: list[str] | None = None,
        current_name: Callable[[bytes], bytes | None] | None = None,
        waited: float = 0.0,
        references: list[tuple[bytes, bytes]] | None = None,
    ):
        self.input = input
        self.original = original
        self.basename = basename
        self.work_dir = work_dir
        self.event: Mapping[str, Any] = {} if event is None else event
        self.options: Mapping[str, str] = {} if options is None else options
        self.notes: list[str] = [] if notes is None else notes
        self.current_name = current_name
        self.waited = waited
        self.references: list[tuple[bytes, bytes]] = [] if references is None else references

    def scratch(self) -> bytes:
        """A new empty directory inside the work dir, for one step's files."""
        return tempfile.mkdtemp(prefix=b"step-", dir=self.work_dir)

    def work_file(self, name: bytes) -> bytes:
        """A new path ``<work dir>/step-N-<name>`` (not created) for one step's file.

        N counts for the whole process, so the path is new even in a work directory
        shared by several contexts; no directory is needed per step."""
        return os.path.join(self.work_dir, b"step-%d-%s" % (next(_STEPS), name))

    def tool_input(self, ext: bytes, source: bytes | None = None) -> bytes:
        """A path to the input (or to ``source``, an intermediate file) that is safe to
        hand to an external tool: its own path when plain, else a symlink to it named
        ``step-N-in<ext>`` (see the module docstring)."""
        src = os.path.abspath(self.input if source is None else source)
        ext = safe_ext(ext)
        if ext and src.endswith(ext) and _PLAIN_PATH.fullmatch(src):
            return src
        safe = self.work_file(b"in" + ext)
        os.symlink(src, safe)
        return safe

    def stage_input(self, ext: bytes, copy: bool = False, source: bytes | None = None) -> tuple[bytes, bytes]:
        """(scratch dir, safe path to the input) for handing to an external tool.

        The safe path is ``<scratch>/in<ext>``: a symlink to the input (or to
        ``source``, an intermediate file), or a copy when the tool might write to its
        input (user commands).
        """
        d = self.scratch()
        safe = os.path.join(d, b"in" + safe_ext(ext))
        src = os.path.abspath(self.input if source is None else source)
        if copy:
            shutil.copyfile(src, safe)
        else:
            os.symlink(src, safe)
        return d, safe


class Processor:
    """Base class: copy ``_template.py`` to write one.

    Class attributes describe the processor; ``process()`` does the work and
    returns ``Output(path, basename)``; it raises ProcessorError (permanent for this
    file), RetryLater (try the event again later) or ToolMissing.
    """

    name: ClassVar[str] = ""  # the name users give, e.g. "image_optimizer.Max"
    description: ClassVar[str] = ""  # one line, for fc-process --list
    extensions: ClassVar[tuple[str, ...]] = ()  # lowercase with dots; () = any file
    tools: ClassVar[tuple[Tool, ...]] = ()  # external commands needed
    renames: ClassVar[bool] = False  # may change the base name
    per_server: ClassVar[bool] = False  # output depends on the destination server
    reports_references: ClassVar[bool] = False  # fills Context.references (the stage keeps the graph)
    # decides from the name and the event alone: never opens the content, never writes a file, returns
    # Output(ctx.input, ...); fc-process then runs it in its main thread with no work directory
    # (ctx.work_dir is empty), as it does for events no processor applies to
    name_only: ClassVar[bool] = False
    # name_only, and the new name depends on the current name alone: fc-process calls ``rename(name)`` instead
    # of process(), with no Context built per event (process() must give the same name)
    by_name: ClassVar[bool] = False
    timeout: ClassVar[float] = 300.0  # seconds, per external tool run

    def __init__(self, options: Mapping[str, str] | None = None):
        self.options: dict[str, str] = dict(options or {})

    def missing_tools(self) -> list[str]:
        return missing_tools(self.tools)

    def applies_to(self, name: bytes) -> bool:
        """Whether this processor handles a file with base name ``name``."""
        if not self.extensions:
            return True
        suffixes = self.__dict__.get("_suffixes")
        if suffixes is None:  # computed once: this runs for every event that passes fc-process
            suffixes = self._suffixes = tuple(ext.encode() for ext in self.extensions)
        return name.lower().endswith(suffixes)

    def process(self, ctx: Context) -> Output:
        raise NotImplementedError

    def rename(self, name: bytes) -> bytes:
        """The new base name of a file named ``name``, for a ``by_name`` processor."""
        raise NotImplementedError

    def option(self, ctx: Context, key: str, default: str | None = None) -> str | None:
        """A setting: this processor's own options first, then the stage's."""
        return self.options.get(key, ctx.options.get(key, default))

    def convert(
        self,
        ctx: Context,
        ext: bytes,
        argv: Callable[[bytes, bytes], Sequence[str | bytes]],
        warn_exit: Collection[int] = (),
        source: bytes | None = None,
    ) -> bytes | None:
        """Run a tool reading the input (or ``source``; see ``Context.tool_input``) and
        writing ``step-N-out<ext>``; the output's path, or None when the tool exited with
        one of ``warn_exit`` (its output is not to be trusted)."""
        src = ctx.tool_input(ext, source=source)
        out = ctx.work_file(b"out" + safe_ext(ext))
        return None if self.run_tool(argv(src, out), ctx, warn_exit=warn_exit) in warn_exit else out

    def run_tool(
        self,
        argv: Sequence[str | bytes],
        ctx: Context,
        *,
        stdout_to: bytes | None = None,
        warn_exit: Collection[int] = (),
    ) -> int:
        """Run an external tool (stdout to ``stdout_to`` or discarded); its exit status.

        A non-zero exit raises ProcessorError with the gist of stderr, except the
        codes in ``warn_exit`` (jpegtran's 2: "warnings, e.g. a truncated file").
        stderr of a successful run holds warnings: they go to ``ctx.notes``.
        """
        command = os.fsdecode(argv[0])
        exe = _which(command)
        if exe is None:
            raise self._missing(command)
        sink = open(stdout_to, "xb") if stdout_to is not None else None  # noqa: SIM115
        try:
            # in the work directory: a tool's stray files (backups, temp files) stay inside it
            returncode, stderr = _run([exe, *argv[1:]], sink, ctx.work_dir or None, self.timeout)
        except subprocess.TimeoutExpired:
            raise ProcessorError(f"{command} timed out after {self.timeout:g} s") from None
        except FileNotFoundError as exc:
            if exc.filename != exe:  # not the tool (the work dir?): the stage decides
                raise
            _EXE.pop((command, os.environ.get("PATH")), None)  # uninstalled or moved since we looked it up
            if _which(command) is None:
                raise self._missing(command) from None
            raise RetryLater(f"{command} moved on PATH while running") from None
        finally:
            if sink is not None:
                sink.close()
        err = _own_names(stderr.decode("utf-8", "replace").strip(), ctx)
        tool = os.path.basename(command)
        if returncode != 0 and returncode not in warn_exit:
            raise ProcessorError(f"{tool} failed (exit {returncode}): {self.tool_error(err) or 'no message'}")
        if err or returncode:
            ctx.notes.append(f"{tool}: {self.tool_error(err) or 'exit ' + str(returncode)}")
        return returncode

    def tool_error(self, stderr: str) -> str:
        """What a tool's stderr says, for people: its gist.  A processor whose tool
        words its errors oddly (YUI on Debian) overrides this."""
        return gist(stderr)

    def _missing(self, command: str) -> ToolMissing:
        tool = next((t for t in self.tools if t.command == command), None)
        what = tool.hint() if tool else f"{command} (not found on PATH)"
        return ToolMissing(f"{self.name}: missing tool {what}")


_STEPS = itertools.count(1)  # next() is atomic under the GIL: no lock needed between workers

# Plain enough to hand to any tool as it is: absolute, no glob, quote, space,
# option-like or non-ASCII character (see the module docstring).
_PLAIN_PATH = re.compile(rb"/[A-Za-z0-9._+/-]*")

# (command, PATH) -> the command's path: shutil.which stats every PATH entry, on every file
_EXE: dict[tuple[str, str | None], str] = {}


def _which(command: str) -> str | None:
    key = (command, os.environ.get("PATH"))
    exe = _EXE.get(key)
    if exe is None:
        exe = shutil.which(command)
        if exe is not None:
            _EXE[key] = exe
    return exe


def _run(argv: Sequence[str | bytes], stdout: IO[bytes] | None, cwd: bytes | None, timeout: float) -> tuple[int, bytes]:
    """Run ``argv`` (stdin empty, stdout to ``stdout`` or discarded), within ``timeout``
    seconds; (exit status, stderr).  TimeoutExpired after killing it.

    Not subprocess.run(timeout=): after the tool closes stderr, its wait polls with
    sleeps of 0.5 ms and more, a gap in which a --jobs slot idles, on every file.
    Here the exit is awaited on a pidfd (Linux), so it is seen at once."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    deadline = time.monotonic() + timeout
    try:
        assert proc.stderr is not None
        with proc.stderr:
            stderr = _read_all(proc.stderr.fileno(), deadline, argv, timeout)
        _wait(proc, deadline, argv, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, stderr


def _read_all(fd: int, deadline: float, argv: Sequence[str | bytes], timeout: float) -> bytes:
    """Everything written to pipe ``fd`` until it is closed, or TimeoutExpired."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(argv, timeout)
        if not poller.poll(min(left, 60.0) * 1000):
            continue
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _wait(proc: subprocess.Popen[bytes], deadline: float, argv: Sequence[str | bytes], timeout: float) -> None:
    """Reap ``proc`` (its stderr is closed, so it is exiting), or TimeoutExpired."""
    if proc.poll() is not None:
        return
    pidfd_open = getattr(os, "pidfd_open", None)
    try:
        fd = pidfd_open(proc.pid) if pidfd_open is not None else None
    except OSError:  # an old kernel: subprocess's own (polling) wait
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise subprocess.TimeoutExpired(argv, timeout)
        finally:
            os.close(fd)
    proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _own_names(stderr: str, ctx: Context) -> str:
    """``stderr`` with the staged copies' paths (``<work>/step-3-in.js``) replaced by the
    file's own name: a tool names the file it read, which means nothing to the user."""
    if not ctx.work_dir or os.fsdecode(ctx.work_dir) not in stderr:
        # nothing to replace (a quiet tool): no pattern compiled, which was the CPU of a regex per file (each work
        # directory is new, so re's cache never had it)
        return stderr
    staged = re.escape(os.fsdecode(ctx.work_dir)) + r"/(?:step-[^/\s]*/)?(?:step-\d+-)?in(?:\.[A-Za-z0-9_]+)?\b"
    return re.sub(staged, lambda _: display(ctx.basename), stderr)


def gist(stderr: str, limit: int = 400) -> str:
    """The informative lines of a tool's stderr (Java stack traces are mostly noise)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    keep = [ln for ln in lines if "ERROR" in ln or "error" in ln or ln.startswith("Caused by")]
    text = " | ".join(keep or lines[-3:])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_ext(ext: bytes) -> bytes:
    """``ext`` when it is plain (``.png``, ``.tar``), else nothing: staged names stay ASCII."""
    return ext if re.fullmatch(rb"\.[A-Za-z0-9_]{1,16}", ext) else b""


def split_name(name: bytes) -> tuple[bytes, bytes]:
    """(stem, extension with its dot) of a base name; ``.htaccess`` has no extension."""
    return os.path.splitext(name)


def not_larger(ctx: Context, candidate: bytes | None, renamed: bytes | None = None) -> Output:
    """``candidate`` (named ``renamed`` if given) when it is smaller than the input,
    else the input's own bytes and name: an optimiser must never make a file bigger."""
    if candidate is not None:
        try:
            size = os.stat(candidate).st_size
        except FileNotFoundError:
            size = None
        if size is not None and size < os.path.getsize(ctx.input):
            return Output(candidate, renamed or ctx.basename)
    return Output(ctx.input, ctx.basename)


def base_name_problem(name: bytes) -> str | None:
    """Why ``name`` is not a base name (one entry of one directory), or None when it is.

    The one check for every name fc-process writes a file under: those processors
    return and those that arrive in events (``name``), which a forged line may set
    to ``/tmp/x`` or ``../../x``."""
    if not name:
        return "empty"
    if b"/" in name:
        return "holds '/'"
    if b"\0" in name:
        return "holds NUL"
    if name in (b".", b".."):
        return f"is {name.decode()!r}"
    return None


def checked(proc: Processor, ctx: Context, out: Output) -> Output:
    """Enforce the rules every processor must follow on its Output."""
    name = out.basename
    problem = base_name_problem(name)
    if problem:
        raise ProcessorError(f"{proc.name}: invalid base name {display(name)!r}: {problem} (only the name may change)")
    if name != ctx.basename and not proc.renames:
        raise ProcessorError(f"{proc.name} renamed the file but does not declare renames = True")
    if out.path != ctx.input:
        if not _in_work_dir(ctx.work_dir, out.path):
            raise ProcessorError(f"{proc.name} wrote {display(out.path)} outside the work directory")
        if not os.path.isfile(out.path):
            raise ProcessorError(f"{proc.name} produced no output file")
    return out


def _in_work_dir(work_dir: bytes, path: bytes) -> bool:
    """Whether ``path`` is (or leads to) a file inside ``work_dir``."""
    head, name = os.path.split(path)
    if work_dir and head == work_dir and name not in (b"", b".", b".."):
        # the common case, a step file: an entry of the work dir that is not a symlink
        # is inside it, whatever the directories above are (no realpath lookups)
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return True
        except FileNotFoundError:
            return True  # nothing there: "produced no output file"
    return os.path.realpath(path).startswith(os.path.realpath(work_dir) + b"/")


def apply(proc: Processor, ctx: Context) -> Output:
    """Run one processor step if it applies to the current name, checking its Output.

    OSError from the processor (FileNotFoundError: the file vanished) propagates
    unchanged: whether that drops the event is the stage's decision.
    """
    if not proc.applies_to(ctx.basename):
        return Output(ctx.input, ctx.basename)
    return checked(proc, ctx, proc.process(ctx))
