"""google_closure_compiler.GoogleClosureCompiler: JavaScript through the Closure Compiler.

Event before/after (the name stays)::

    {"kind": "created", "path": "/srv/www/js/app.js", "size": 20480, ...}
    {"kind": "created", "path": "/srv/www/js/app.js", "size": 20480, ..., "name": "app.js"}

Runs ``closure-compiler --js IN --js_output_file OUT`` (Debian's closure-compiler
package, or the ``google-closure-compiler`` npm package's command of the same
name).  Only files ending in ``.js`` (the original also took files without an
extension by accident).  Warnings (stderr, exit 0) are noted, not failures;
errors (non-zero exit) fail the file.  A JVM starts per file: about 2 s each.
"""

from __future__ import annotations

from .base import Context, Output, Processor, Tool, not_larger


class GoogleClosureCompiler(Processor):
    name = "google_closure_compiler.GoogleClosureCompiler"
    description = "compresses .js files with the Google Closure Compiler (Java)"
    extensions = (".js",)
    tools = (Tool("closure-compiler", "closure-compiler"),)

    def process(self, ctx: Context) -> Output:
        def argv(src: bytes, out: bytes) -> list[str | bytes]:
            return ["closure-compiler", "--js", src, "--js_output_file", out]

        return not_larger(ctx, self.convert(ctx, b".js", argv))
