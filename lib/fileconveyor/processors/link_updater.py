"""link_updater.CSSURLUpdater: point url() and @import references in CSS at their synced copies.

Event before/after (per destination server; the name stays)::

    {"kind": "created", "path": "/srv/www/site/css/a.css", ...}     # .x { background: url(../img/x.png?v=2) }
    {"kind": "created", "path": "/srv/www/site/css/a.css", ..., "name": "a.css"}
                                      # .x { background: url(https://cdn.example.com/img/x_5d41.png?v=2) }

Options (the processor's own, else the stage's):

- ``document_root``: the directory a root-relative URL (``/site/img/x.png``) starts
  from; ``base_path``: the URL path at which the source is served (``/site/``).  As in
  the original: when ``document_root + base_path`` is a directory, the URL path is
  appended to document_root; otherwise (a "logical" base path made with
  symlinks) the part after base_path is.
- ``synced_db``: fc-record's SQLite file, read only: table
  ``synced_files(input_file, transported_file_basename, url, server)``, where
  input_file is the absolute source path (text; a BLOB of the raw bytes when the
  path is not UTF-8).  Both the path as written and its realpath are looked up.
- ``server``: the destination this output is for.  The output differs per server,
  so fc-process must run this processor once per destination.

Relative and root-relative references to files that exist are replaced by the
``url`` of that file on the same server, keeping ``?query`` and ``#fragment``.
Absolute (``https:``), protocol-relative (``//host``) and ``data:`` URLs, and
references to files that do not exist, are left alone.  When an existing file is
not synced to the server yet, RetryLater: the event is retried later, when the
references should be there.  cssutils re-serialises the stylesheet when a URL
changed; a stylesheet with nothing to rewrite passes through byte for byte.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import urllib.parse
import xml.dom
from collections.abc import Callable

import cssutils

from .base import Context, Output, Processor, ProcessorError, RetryLater

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, data:, mailto: ...
cssutils.log.setLevel(logging.CRITICAL)  # it logs every property it does not know; not our errors


def local_target(url: str, css_file: bytes, document_root: bytes, base_path: str) -> tuple[bytes, str] | None:
    """(file path, "?query#fragment" suffix) a reference points at, or None when it is not local."""
    url = url.strip()
    if not url or url.startswith("//") or _SCHEME.match(url) or url.startswith("#"):
        return None
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    path, suffix = urllib.parse.unquote_to_bytes(url[:cut]), url[cut:]
    if path.startswith(b"/"):
        base = base_path.encode()
        if os.path.isdir(os.path.join(document_root, base.lstrip(b"/"))):
            target = document_root + path
        elif path.startswith(base):
            target = document_root + b"/" + path[len(base) :]
        else:
            return None
    else:
        target = os.path.join(os.path.dirname(css_file), path)
    return os.path.normpath(target), suffix


def with_suffix(url: str, suffix: str) -> str:
    """The synced URL with the reference's query and fragment kept working."""
    if suffix.startswith("?") and "?" in url:
        suffix = "&" + suffix[1:]
    return url + suffix


def _key(path: bytes) -> str | bytes:
    """input_file as stored: UTF-8 text, or the raw bytes (a BLOB) for a name that is not UTF-8."""
    try:
        return path.decode("utf-8")
    except UnicodeDecodeError:
        return path


class SyncedFiles:
    """Read-only lookups in fc-record's synced_files table."""

    def __init__(self, path: str | None):
        self.path = path
        self.db: sqlite3.Connection | None = None

    def url(self, file: bytes, server: str) -> str | None:
        if not self.path or not os.path.exists(self.path):
            return None  # nothing synced yet
        if self.db is None:
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=30)
        for key in dict.fromkeys([_key(file), _key(os.path.realpath(file))]):
            row = self.db.execute(
                "SELECT url FROM synced_files WHERE input_file = ? AND server = ?", (key, server)
            ).fetchone()
            if row is not None:
                return str(row[0])
        return None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


class CSSURLUpdater(Processor):
    name = "link_updater.CSSURLUpdater"
    description = "replaces references in .css files by their URLs on the same server (run per server)"
    extensions = (".css",)
    per_server = True

    def process(self, ctx: Context) -> Output:
        root, base = self.option(ctx, "document_root"), self.option(ctx, "base_path")
        if not root or not base:
            raise ProcessorError(f"{self.name} needs the source's document_root and base_path")
        server = self.option(ctx, "server") or ""
        base = "/" + base.strip("/") + "/" if base.strip("/") else "/"
        with open(ctx.input, "rb") as f:
            data = f.read()
        db = SyncedFiles(self.option(ctx, "synced_db"))
        try:
            changed, missing, sheet = self._rewrite(data, ctx.original, os.fsencode(root), base, server, db)
        finally:
            db.close()
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise RetryLater(f"not synced to server {server!r} yet: {', '.join(missing[:3])}{more}")
        if not changed:
            return Output(ctx.input, ctx.basename)
        out = ctx.work_file(b"out.css")
        with open(out, "xb") as f:
            f.write(sheet.cssText)
        return Output(out, ctx.basename)

    def _rewrite(
        self, data: bytes, css_file: bytes, root: bytes, base: str, server: str, db: SyncedFiles
    ) -> tuple[bool, list[str], cssutils.css.CSSStyleSheet]:
        changed, missing = False, []

        def replace(url: str) -> str:
            nonlocal changed
            target = local_target(url, css_file, root, base)
            if target is None or not os.path.isfile(target[0]):
                return url
            synced = db.url(target[0], server)
            if synced is None:
                missing.append(os.fsdecode(target[0]))
                return url
            changed = True
            return with_suffix(synced, target[1])

        try:
            sheet = cssutils.parseString(data, validate=False)
        except (ValueError, LookupError, xml.dom.DOMException) as exc:  # bad bytes, unknown @charset
            raise ProcessorError(f"cannot parse the stylesheet: {exc}") from None
        _replace_urls(sheet, replace)
        return changed, missing, sheet


def _replace_urls(sheet: cssutils.css.CSSStyleSheet, fn: Callable[[str], str]) -> None:
    # ignoreImportRules=False: @import "x.css" and @import url(x.css) are references too.
    cssutils.replaceUrls(sheet, fn, ignoreImportRules=False)
