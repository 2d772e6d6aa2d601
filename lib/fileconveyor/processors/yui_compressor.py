"""yui_compressor.YUICompressor: CSS and JavaScript through the YUI Compressor (Java).

Event before/after (the name stays)::

    {"kind": "created", "path": "/srv/www/js/app.js", "size": 20480, ...}
    {"kind": "created", "path": "/srv/www/js/app.js", "size": 20480, ..., "name": "app.js"}

Runs Debian's ``yui-compressor`` wrapper as ``yui-compressor --type css|js
--charset utf-8 -o OUT IN``.  Warnings (stderr, exit 0) are noted, not failures;
a syntax error (non-zero exit) fails the file.  CPU-intensive: a JVM starts per
file.  minify.CSS / minify.JS do the same job without Java.

YUI removes the spaces inside a quoted ``url("data:image/svg+xml,<svg xmlns=...")``,
which breaks the image: a stylesheet's ``url()`` tokens are hidden from it behind
placeholders and put back afterwards (css_urls.protect).

Debian's yui-compressor jar lacks the message texts of the JavaScript parser it
embeds (Rhino): on a syntax error it dies with ``MissingResourceException: Can't
find bundle for base name org.mozilla.javascript.resources.Messages`` and a stack
trace, and the error itself is lost.  That case is reported as a syntax error,
with the parser step that refused the file and a command that names the error.
"""

from __future__ import annotations

import re

from . import css_urls
from .base import Context, Output, Processor, Tool, gist, not_larger, split_name

# The Rhino parser step that refused the file: the frame after Parser.reportError.
_PARSER_STEP = re.compile(r"Parser\.reportError\([^)]*\)\s+at org\.mozilla\.javascript\.Parser\.(\w+)")


class YUICompressor(Processor):
    name = "yui_compressor.YUICompressor"
    description = "compresses .css and .js files with the YUI Compressor (Java)"
    extensions = (".css", ".js")
    tools = (Tool("yui-compressor", "yui-compressor"),)

    def process(self, ctx: Context) -> Output:
        ext = split_name(ctx.basename)[1].lower()
        kind = "css" if ext == b".css" else "js"
        argv = ["yui-compressor", "--type", kind, "--charset", "utf-8"]
        if kind == "js":
            return not_larger(ctx, self.convert(ctx, ext, lambda src, out: [*argv, "-o", out, src]))
        with open(ctx.input, "rb") as f:
            protected, restore = css_urls.protect(f.read())
        source = ctx.work_file(b"protected.css")
        with open(source, "xb") as f:
            f.write(protected)
        out = self.convert(ctx, ext, lambda src, out: [*argv, "-o", out, src], source=source)
        if out is not None:
            with open(out, "rb") as f:
                data = restore(f.read())
            with open(out, "wb") as f:
                f.write(data)
        return not_larger(ctx, out)

    def tool_error(self, stderr: str) -> str:
        if "MissingResourceException" not in stderr or "org.mozilla.javascript" not in stderr:
            return gist(stderr)
        step = _PARSER_STEP.search(stderr)
        where = f" (the parser refused it in {step.group(1)})" if step else ""
        return (
            f"the JavaScript has a syntax error{where}; Debian's yui-compressor cannot say which"
            " (its parser's message texts are missing): `closure-compiler --js FILE` or `node --check FILE`"
            " names it"
        )
