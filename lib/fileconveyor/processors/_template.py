"""TEMPLATE: copy this file to write a processor (your own package, or a module here).

Use it as ``fc-process --processor mypackage.mymodule:Lowercase`` or register an
entry point in your pyproject.toml::

    [project.entry-points."fileconveyor.processors"]
    "mymodule.Lowercase" = "mypackage.mymodule:Lowercase"

The docstring of a processor says what it does, its options, and shows an event
before and after (fc-process records the file to transport and its final name)::

    {"kind": "created", "path": "/srv/www/Logo.PNG", "rel": "Logo.PNG", ...}
    {"kind": "created", "path": "/srv/www/Logo.PNG", "rel": "Logo.PNG", ..., "name": "logo.png"}

Rules (fc-process checks them):

- write every file inside the event's work directory: ``ctx.work_file(b"out.png")``
  gives a new path there (``ctx.scratch()`` a fresh directory); never touch
  ``ctx.input`` or ``ctx.original``;
- change only the base name (no ``/``), and only when ``renames = True``;
- return ``Output(ctx.input, ctx.basename)`` to pass a file through unchanged;
- run tools with ``self.convert()`` / ``self.run_tool()`` (argument lists, no shell,
  safe file names, a timeout) and list them in ``tools`` for the start-up check;
- raise ``ProcessorError`` when this file cannot be processed, ``RetryLater`` when
  it may work later.
"""

from __future__ import annotations

from .base import Context, Output, Processor


class Lowercase(Processor):
    name = "_template.Lowercase"  # what users write; for a built-in: "<module>.<Class>"
    description = "lowercases the file name (Logo.PNG -> logo.png)"  # one line, for --list
    extensions = ()  # lowercase with the dot, e.g. (".png", ".jpg"); () means every file
    tools = ()  # e.g. (Tool("optipng", "optipng"),): checked at start-up with what to install
    renames = True  # this processor changes the base name
    per_server = False  # True when the output depends on ctx.options["server"]
    name_only = True  # only the name changes, the content is never read: fc-process needs no work directory
    by_name = True  # the new name depends on the current name alone: rename() gives it (no Context needed)

    def process(self, ctx: Context) -> Output:
        # Content unchanged, so no copy: the input itself goes on under a new name.
        # A content change would write e.g. ctx.work_file(b"out.png").
        return Output(ctx.input, self.rename(ctx.basename))

    def rename(self, name: bytes) -> bytes:
        return name.lower()
