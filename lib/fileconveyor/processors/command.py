"""cmd:COMMAND: any external command as a processor, run without a shell.

    fc-process --processor 'cmd:optipng -quiet -out {out} {in}'
    fc-process --processor 'cmd:gzip -9 -c {in}'          # no {out}: stdout is the output

Event before/after (the name stays)::

    {"kind": "created", "path": "/srv/www/a b.png", ...}
    {"kind": "created", "path": "/srv/www/a b.png", ..., "name": "a b.png"}

The command is split like a shell would split it (shlex), once, at start-up;
``{in}`` and ``{out}`` are then replaced inside the argument list, so a file name
is never parsed: it cannot add arguments or run commands.  ``{in}`` is a private
copy of the input with a plain name (``in.png``; the command may modify it),
``{out}`` a path in the work directory with the input's extension.  Without
``{out}``, the command's stdout is the result, or, when it prints nothing, the
``{in}`` copy as the command left it (in-place tools).  A non-zero exit fails the file.

Options: ``command`` (what follows ``cmd:``), ``extensions`` (``png:jpg``, default
any file), ``timeout`` (seconds).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping

from ..errors import ConfigError
from .base import Context, Output, Processor, Tool, safe_ext, split_name


class CommandProcessor(Processor):
    name = "cmd"
    description = "runs any command on the file: cmd:TOOL ARGS with {in} and {out} (no shell)"

    def __init__(self, options: Mapping[str, str] | None = None):
        super().__init__(options)
        command = self.options.get("command", "")
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"cmd:{command}: {exc}") from None
        if not self.argv or "{in}" not in command:
            raise ConfigError(f"cmd:{command}: give a command using {{in}} (and {{out}}, or write to stdout)")
        self.name = f"cmd:{command}"
        self.tools = (Tool(self.argv[0], ""),)
        exts = self.options.get("extensions", "")
        self.extensions = tuple("." + e.lower().lstrip(".") for e in exts.split(":") if e)
        if "timeout" in self.options:
            try:
                self.timeout = float(self.options["timeout"])
            except ValueError:
                raise ConfigError(f"cmd:{command}: timeout must be a number of seconds") from None

    def process(self, ctx: Context) -> Output:
        ext = split_name(ctx.basename)[1]
        d, src = ctx.stage_input(ext, copy=True)
        out = os.path.join(d, b"out" + safe_ext(ext))
        argv = [os.fsencode(a).replace(b"{in}", src).replace(b"{out}", out) for a in self.argv]
        if any("{out}" in a for a in self.argv):
            self.run_tool(argv, ctx)
            return Output(out, ctx.basename)
        self.run_tool(argv, ctx, stdout_to=out)
        # Nothing on stdout: an in-place tool (``optipng {in}``) edited the private copy.
        return Output(out if os.path.getsize(out) else src, ctx.basename)
