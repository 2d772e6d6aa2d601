"""yui_compressor.YUICompressor: CSS and JavaScript through the YUI Compressor (Java).

Event before/after (the name stays)::

    {"kind": "created", "path": "/srv/www/js/app.js", "size": 20480, ...}
    {"kind": "created", "path": "/srv/www/js/app.js", "size": 20480, ..., "name": "app.js"}

Runs Debian's ``yui-compressor`` wrapper as ``yui-compressor --type css|js
--charset utf-8 -o OUT IN``.  Warnings (stderr, exit 0) are noted, not failures;
a syntax error (non-zero exit) fails the file.  CPU-intensive: a JVM starts per
file.  minify.CSS / minify.JS do the same job without Java.
"""

from __future__ import annotations

from .base import Context, Output, Processor, Tool, not_larger, split_name


class YUICompressor(Processor):
    name = "yui_compressor.YUICompressor"
    description = "compresses .css and .js files with the YUI Compressor (Java)"
    extensions = (".css", ".js")
    tools = (Tool("yui-compressor", "yui-compressor"),)

    def process(self, ctx: Context) -> Output:
        ext = split_name(ctx.basename)[1].lower()
        kind = "css" if ext == b".css" else "js"
        argv = ["yui-compressor", "--type", kind, "--charset", "utf-8"]
        return not_larger(ctx, self.convert(ctx, ext, lambda src, out: [*argv, "-o", out, src]))
