"""The interface every processor shares, and the helpers they use.

A processor turns one file into another (or passes it through) and may change its
base name, never its directory.  fc-process runs a chain of them per event; each
step gets a Context and returns an Output.  All outputs are written inside the
event's private work directory, so concurrent chains (and per-server chains of the
same file) never overwrite each other.

External tools always run without a shell, with an argument list and a timeout,
and on *staged* file names (``in.png`` in a fresh scratch directory, a symlink to
the real input): a file name with spaces, quotes, a leading dash, a newline or
bytes that are not UTF-8 then never reaches a tool at all.  Java tools in
particular decode argv with the locale and cannot open names that are not UTF-8.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ..errors import ConfigError, FCError, RetryableError
from ..events import display


class ProcessorError(FCError):
    """Processing this file failed and retrying will not help (bad input, tool error)."""


class RetryLater(RetryableError):
    """Not possible yet, expected to work later (e.g. CSS references not synced yet)."""


class ToolMissing(ConfigError):
    """An external command a processor needs is not installed; says what to install."""


@dataclass(frozen=True)
class Tool:
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


@dataclass
class Context:
    """What one processor step sees.

    ``input`` is the current file (the source file, or the previous step's output),
    ``original`` the source file's path, ``basename`` the current base name.
    ``options`` holds stage-wide settings: document_root, base_path, server,
    synced_db.  ``notes`` collects warnings for people (a tool's stderr on success).
    """

    input: bytes
    original: bytes
    basename: bytes
    work_dir: bytes
    event: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def scratch(self) -> bytes:
        """A new empty directory inside the work dir, for one step's files."""
        return tempfile.mkdtemp(prefix=b"step-", dir=self.work_dir)

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
        """Run a tool reading ``in<ext>`` (the input, or ``source``) and writing ``out<ext>``
        (staged names); the output's path, or None when the tool exited with one of
        ``warn_exit`` (its output is not to be trusted)."""
        d, src = ctx.stage_input(ext, source=source)
        out = os.path.join(d, b"out" + safe_ext(ext))
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
        exe = shutil.which(os.fsdecode(argv[0]))
        if exe is None:
            tool = next((t for t in self.tools if t.command == os.fsdecode(argv[0])), None)
            what = tool.hint() if tool else f"{os.fsdecode(argv[0])} (not found on PATH)"
            raise ToolMissing(f"{self.name}: missing tool {what}")
        sink = open(stdout_to, "xb") if stdout_to is not None else None  # noqa: SIM115
        try:
            proc = subprocess.run(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=sink if sink is not None else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                # in the work directory: a tool's stray files (backups, temp files) stay inside it
                cwd=ctx.work_dir or None,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ProcessorError(f"{os.fsdecode(argv[0])} timed out after {self.timeout:g} s") from None
        finally:
            if sink is not None:
                sink.close()
        err = proc.stderr.decode("utf-8", "replace").strip()
        tool = os.path.basename(os.fsdecode(argv[0]))
        if proc.returncode != 0 and proc.returncode not in warn_exit:
            raise ProcessorError(f"{tool} failed (exit {proc.returncode}): {gist(err) or 'no message'}")
        if err or proc.returncode:
            ctx.notes.append(f"{tool}: {gist(err) or 'exit ' + str(proc.returncode)}")
        return proc.returncode


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
    if candidate is not None and os.path.exists(candidate) and os.path.getsize(candidate) < os.path.getsize(ctx.input):
        return Output(candidate, renamed or ctx.basename)
    return Output(ctx.input, ctx.basename)


def checked(proc: Processor, ctx: Context, out: Output) -> Output:
    """Enforce the rules every processor must follow on its Output."""
    name = out.basename
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise ProcessorError(f"{proc.name}: invalid base name {display(name)!r} (only the name may change)")
    if name != ctx.basename and not proc.renames:
        raise ProcessorError(f"{proc.name} renamed the file but does not declare renames = True")
    if out.path != ctx.input:
        work = os.path.realpath(ctx.work_dir) + b"/"
        if not os.path.realpath(out.path).startswith(work):
            raise ProcessorError(f"{proc.name} wrote {display(out.path)} outside the work directory")
        if not os.path.isfile(out.path):
            raise ProcessorError(f"{proc.name} produced no output file")
    return out


def apply(proc: Processor, ctx: Context) -> Output:
    """Run one processor step if it applies to the current name, checking its Output.

    OSError from the processor (FileNotFoundError: the file vanished) propagates
    unchanged: whether that drops the event is the stage's decision.
    """
    if not proc.applies_to(ctx.basename):
        return Output(ctx.input, ctx.basename)
    return checked(proc, ctx, proc.process(ctx))
