"""image_optimizer.*: lossless optimisation of JPEG, PNG and GIF images.

Event before/after (Max; a single-frame GIF becomes a PNG)::

    {"kind": "created", "path": "/srv/www/logo.gif", "size": 5120, ...}
    {"kind": "created", "path": "/srv/www/logo.gif", "size": 5120, ..., "name": "logo.png"}

Decoded pixels never change:

- JPEG: ``jpegtran -optimize`` rewrites the Huffman tables (``-progressive`` from
  10 KiB on) without decoding to pixels; ``-copy none`` drops all metadata (EXIF,
  comments, ICC profile), ``-copy all`` keeps it.
- PNG: ``optipng -o2`` (``-strip all`` drops ancillary chunks when stripping).
- single-frame GIF: converted to PNG with Pillow, then optipng, and renamed
  ``.png``, by the classes that allow renames; the others run gifsicle on it.
- animated GIF: ``gifsicle -O2`` keeps every frame, delay and the loop count.

The result is never larger than the input: when optimising does not help, the
original bytes pass unchanged under their own name.  The format is read from the
file's first bytes, not its extension.

Stripping metadata may remove copyright notices: use a KeepMetadata class to keep them.
"""

from __future__ import annotations

import os
from typing import ClassVar

from .base import Context, Output, Processor, ProcessorError, Tool, not_larger, split_name

JPEGTRAN = Tool("jpegtran", "libjpeg-turbo-progs")
OPTIPNG = Tool("optipng", "optipng")
GIFSICLE = Tool("gifsicle", "gifsicle")
PROGRESSIVE_FROM = 10 * 1024  # smaller JPEGs are usually larger as progressive ones


def sniff(path: bytes) -> str | None:
    """ "JPEG", "PNG", "GIF" or None, from the file's magic bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def gif_frames(path: bytes) -> int:
    from PIL import Image  # imported here: only GIFs need Pillow

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ProcessorError(f"not a readable GIF: {exc}") from None


class Max(Processor):
    name = "image_optimizer.Max"
    description = "optimises JPEG, PNG and GIF losslessly, drops metadata, turns single-frame GIFs into PNGs"
    extensions = (".gif", ".png", ".jpg", ".jpeg")
    tools = (JPEGTRAN, OPTIPNG, GIFSICLE)
    renames = True
    keep_metadata: ClassVar[bool] = False

    def process(self, ctx: Context) -> Output:
        kind = sniff(ctx.input)
        if kind == "JPEG":
            return not_larger(ctx, self._jpeg(ctx))
        if kind == "PNG":
            return not_larger(ctx, self._png(ctx, ctx.input))
        if kind == "GIF":
            if self.renames and gif_frames(ctx.input) == 1:
                return not_larger(ctx, self._gif_to_png(ctx), split_name(ctx.basename)[0] + b".png")
            return not_larger(ctx, self._gif(ctx))
        return Output(ctx.input, ctx.basename)  # not an image after all: pass it on

    def _jpeg(self, ctx: Context) -> bytes | None:
        argv = ["jpegtran", "-copy", "all" if self.keep_metadata else "none", "-optimize"]
        if os.path.getsize(ctx.input) >= PROGRESSIVE_FROM:
            argv.append("-progressive")
        # Exit 2 means warnings such as "Premature end of JPEG file": a damaged file
        # passes unchanged (with a note) rather than be rewritten or blocked.
        return self.convert(ctx, b".jpg", lambda src, out: [*argv, "-outfile", out, src], warn_exit=(2,))

    def _png(self, ctx: Context, path: bytes) -> bytes:
        strip = [] if self.keep_metadata else ["-strip", "all"]
        result = self.convert(
            ctx, b".png", lambda i, o: ["optipng", "-quiet", "-o2", *strip, "-out", o, i], source=path
        )
        # optipng may write nothing when the input is already optimal: fall back to it.
        return result if result is not None and os.path.exists(result) else path

    def _gif_to_png(self, ctx: Context) -> bytes:
        from PIL import Image

        png = ctx.work_file(b"converted.png")
        try:
            with Image.open(ctx.input) as im:
                # mode P with its palette and transparency index: the PNG decodes to the same pixels.
                im.save(os.fsdecode(png), "PNG")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ProcessorError(f"cannot convert GIF to PNG: {exc}") from None
        return self._png(ctx, png)

    def _gif(self, ctx: Context) -> bytes | None:
        strip = [] if self.keep_metadata else ["--no-comments", "--no-names"]
        return self.convert(ctx, b".gif", lambda src, out: ["gifsicle", "-O2", *strip, "-o", out, src])


class KeepMetadata(Max):
    name = "image_optimizer.KeepMetadata"
    description = "same as Max, but keeps metadata (EXIF, comments, ICC profiles)"
    keep_metadata = True


class KeepFilename(Max):
    name = "image_optimizer.KeepFilename"
    description = "same as Max, but keeps the file name (GIFs stay GIFs, optimised with gifsicle)"
    renames = False


class KeepMetadataAndFilename(Max):
    name = "image_optimizer.KeepMetadataAndFilename"
    description = "same as Max, but keeps metadata and the file name"
    keep_metadata = True
    renames = False
