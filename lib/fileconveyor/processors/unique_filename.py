"""unique_filename.*: add the modification time or a content hash to the base name.

Event before/after::

    {"kind": "created", "path": "/srv/www/logo.gif", "mtime_ns": "1240668971000000000", ...}
    Mtime: ..., "name": "logo_1240668971.gif"
    MD5:   ..., "name": "logo_2f0342a2b9aaf48f9e75aa7ed1d58c48.gif"

Both work on the *current* step, not the source file as the original did:

- the name comes from the current base name, so ``image_optimizer.Max`` turning
  ``logo.gif`` into ``logo.png`` gives ``logo_<hash>.png``, whose extension
  matches the content;
- MD5 hashes the current (processed) content, streaming in 1 MiB blocks, so the
  name identifies the bytes actually uploaded: a new optimiser version that
  produces other bytes gives another name, and caches never serve stale bytes.

Mtime uses the source file's modification time (from the event's ``mtime_ns``
when present, else the file's own: never through a symlink, whose target may be
any file, outside the tree too), in whole seconds as the original did.
"""

from __future__ import annotations

import hashlib
import os
import stat

from .base import Context, Output, Processor, ProcessorError, split_name

BLOCK = 1 << 20


def _with_suffix(name: bytes, suffix: bytes) -> bytes:
    stem, ext = split_name(name)
    return stem + b"_" + suffix + ext


class Mtime(Processor):
    name = "unique_filename.Mtime"
    description = "adds the file's modification time to its name (logo.gif -> logo_1240668971.gif)"
    renames = True
    name_only = True  # the time comes from the event (or a stat of the source), not from the content

    def process(self, ctx: Context) -> Output:
        mtime_ns = ctx.event.get("mtime_ns")
        try:
            ns = int(mtime_ns) if mtime_ns is not None else _own_mtime_ns(ctx.original)
        except (ValueError, OSError) as exc:
            raise ProcessorError(f"{self.name}: no modification time: {exc}") from None
        return Output(ctx.input, _with_suffix(ctx.basename, b"%d" % (ns // 1_000_000_000)))


def _own_mtime_ns(path: bytes) -> int:
    """The modification time of the regular file at ``path`` itself.  A symlink there (swapped in after the
    checks, or in an event of a hand-made pipeline) is refused: followed, it gave the time of whatever it names
    (``/etc/shadow``: when its passwords changed) in the name uploaded for all to see."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file (a symlink, a directory, a device...)")
    return st.st_mtime_ns


class MD5(Processor):
    name = "unique_filename.MD5"
    description = "adds the MD5 of the (processed) content to the name (logo.png -> logo_<md5>.png)"
    renames = True

    def process(self, ctx: Context) -> Output:
        h = hashlib.md5(usedforsecurity=False)
        with open(ctx.input, "rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
        return Output(ctx.input, _with_suffix(ctx.basename, h.hexdigest().encode()))
