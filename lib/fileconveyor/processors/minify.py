"""minify.CSS and minify.JS: fast minifiers that need no Java (rcssmin, rjsmin from PyPI).

Event before/after (the name stays, the content shrinks)::

    {"kind": "modified", "path": "/srv/www/css/site.css", "size": 5321, ...}
    {"kind": "modified", "path": "/srv/www/css/site.css", "size": 5321, ..., "name": "site.css"}

Both work on bytes (no decoding, so any charset passes) and keep comments that
start with ``/*!`` (licences).  Modern replacements for yui_compressor and
google_closure_compiler: one to two orders of magnitude faster, no JVM start-up.
"""

from __future__ import annotations

import rcssmin
import rjsmin

from . import css_urls
from .base import Context, Output, Processor, not_larger, safe_ext, split_name


class _Minify(Processor):
    def minify(self, data: bytes) -> bytes:
        raise NotImplementedError

    def process(self, ctx: Context) -> Output:
        with open(ctx.input, "rb") as f:
            data = f.read()
        out = ctx.work_file(b"out" + safe_ext(split_name(ctx.basename)[1]))
        with open(out, "xb") as f:
            f.write(self.minify(data))
        return not_larger(ctx, out)


class CSS(_Minify):
    name = "minify.CSS"
    description = "minifies CSS with rcssmin (no Java needed)"
    extensions = (".css",)

    def minify(self, data: bytes) -> bytes:
        # rcssmin removes the spaces inside url("a b.png"): the url() tokens are hidden from it (css_urls.protect)
        protected, restore = css_urls.protect(data)
        return restore(rcssmin.cssmin(protected, keep_bang_comments=True))


class JS(_Minify):
    name = "minify.JS"
    description = "minifies JavaScript with rjsmin (no Java needed; whitespace and comments only)"
    extensions = (".js",)

    def minify(self, data: bytes) -> bytes:
        return rjsmin.jsmin(data, keep_bang_comments=True)
