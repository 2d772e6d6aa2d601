"""filename.*: change characters in the base name; the content passes through untouched.

Event before/after (fc-process adds the file to transport and its final name)::

    {"kind": "created", "path": "/srv/www/a b.css", "rel": "a b.css", ...}
    {"kind": "created", "path": "/srv/www/a b.css", "rel": "a b.css", ..., "name": "a_b.css"}

Unlike the original, the name is derived from the *current* base name (what the
previous step produced), so a rename earlier in the chain is kept.  The file is
not copied: the output is the input itself with a new name.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Context, Output, Processor


class _Replace(Processor):
    renames = True
    name_only = True
    by_name = True
    search: ClassVar[bytes] = b" "
    replace: ClassVar[bytes] = b""

    def process(self, ctx: Context) -> Output:
        return Output(ctx.input, self.rename(ctx.basename))

    def rename(self, name: bytes) -> bytes:
        return name.replace(self.search, self.replace)


class SpacesToUnderscores(_Replace):
    name = "filename.SpacesToUnderscores"
    description = "replaces spaces in the file name by underscores (this is a.txt -> this_is_a.txt)"
    replace = b"_"


class SpacesToDashes(_Replace):
    name = "filename.SpacesToDashes"
    description = "replaces spaces in the file name by dashes (this is a.txt -> this-is-a.txt)"
    replace = b"-"
