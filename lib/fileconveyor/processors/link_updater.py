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
- ``synced_db``: fc-record's record (a SQLite file or a postgresql:// URL), read only: table
  ``synced_files(input_file, transported_file_basename, url, server)``, where
  input_file is the absolute source path (text; a BLOB of the raw bytes when the
  path is not UTF-8).  Both the path as written and its realpath are looked up.
- ``server``: the destination this output is for.  The output differs per server,
  so fc-process must run this processor once per destination.

Relative and root-relative references to files that exist are replaced by the
``url`` of that file on the same server, keeping ``?query`` and ``#fragment``.
Absolute (``https:``), protocol-relative (``//host``) and ``data:`` URLs, and
references to files that do not exist, are left alone.  Only the URL inside each
token changes (css_urls.py): the stylesheet keeps every other byte, so a minified
stylesheet stays minified, and one with nothing to rewrite passes through byte for byte.

A row of synced_files counts only when it is the current version of the file:
when fc-process emitted another name for that path since (``Context.current_name``:
unique_filename gave a changed image a new name), the row names a file that is
being replaced, and the stylesheet waits for the new one.

When a referenced file exists but is not synced to the server yet (or only an
older version of it), RetryLater: the event is retried later, when the
references should be there.  After ``reference_wait`` seconds of such retries
(default 60; fc-process --reference-wait) the reference is left as it was, with a
warning naming the stylesheet and the reference: a file no rule syncs (a font the
extension list lacks) must not hold the stylesheet back for ever.  The original did
the same for references it could not resolve.

The references used are reported in ``Context.references`` (source path, name of
the synced file): fc-process keeps them to process the stylesheet again when one of
them gets a new name (docs/css.md).
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse

from ..errors import RetryableError
from ..records import Reader, db_key, exists, is_url, open_reader
from . import css_urls
from .base import Context, Output, Processor, ProcessorError, RetryLater

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, data:, mailto: ...
REFERENCE_WAIT = 60.0  # seconds a stylesheet waits for a referenced file to be synced, then leaves it as it was


def local_target(url: str, css_file: bytes, document_root: bytes, base_path: str) -> tuple[bytes, str] | None:
    """(file path, "?query#fragment" suffix) a reference points at, or None when it is not local.

    ``url`` is as css_urls gives it: the file's bytes read as Latin-1, so its characters are the file's bytes
    (a CSS escape beyond Latin-1 stands for its UTF-8 bytes)."""
    url = url.strip()
    if not url or url.startswith("//") or _SCHEME.match(url) or url.startswith("#"):
        return None
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    try:
        raw = url[:cut].encode("latin-1")
    except UnicodeEncodeError:
        raw = url[:cut].encode("utf-8", "surrogateescape")
    path, suffix = urllib.parse.unquote_to_bytes(raw), url[cut:]
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


# A postgresql:// record's reader per worker thread, kept from one stylesheet to the next: a login per stylesheet
# costs a round of authentication and a server process each.  Its reads stand alone (autocommit) and it reconnects
# after a lost connection, so keeping it is safe; a SQLite file is opened per stylesheet (cheap, and a file
# replaced since is seen).
_shared = threading.local()


class SyncedFiles:
    """Read-only lookups in fc-record's synced_files table."""

    def __init__(self, path: str | None):
        self.path = path
        self.db: Reader | None = None
        self.kept = bool(path) and is_url(path or "")

    def url(self, file: bytes, server: str) -> tuple[str, bytes] | None:
        """(url, transported base name) of ``file`` on ``server``, or None."""
        if not self.path or not exists(self.path):
            return None  # nothing synced yet
        try:
            if self.db is None:
                self.db = self._open(self.path)
            rows = [self.db.url(key, server) for key in dict.fromkeys([db_key(file), db_key(os.path.realpath(file))])]
        except RetryableError as exc:  # the database server down or busy: the stylesheet waits
            raise RetryLater(str(exc)) from None
        for row in rows:
            if row is not None:
                name = row[1]
                return str(row[0]), name if isinstance(name, bytes) else str(name or "").encode()
        return None

    def _open(self, path: str) -> Reader:
        if not self.kept:
            return open_reader(path)
        readers: dict[str, Reader] = _shared.__dict__.setdefault("readers", {})
        if path not in readers:
            readers[path] = open_reader(path)
        return readers[path]

    def close(self) -> None:
        if self.db is not None and not self.kept:
            self.db.close()


class CSSURLUpdater(Processor):
    name = "link_updater.CSSURLUpdater"
    description = "replaces references in .css files by their URLs on the same server (run per server)"
    extensions = (".css",)
    per_server = True
    reports_references = True

    def process(self, ctx: Context) -> Output:
        root, base = self.option(ctx, "document_root"), self.option(ctx, "base_path")
        if not root or not base:
            raise ProcessorError(f"{self.name} needs the source's document_root and base_path")
        server = self.option(ctx, "server") or ""
        base = "/" + base.strip("/") + "/" if base.strip("/") else "/"
        with open(ctx.input, "rb") as f:
            data = f.read()
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ProcessorError("cannot read the stylesheet: UTF-16 is not supported (save it as UTF-8)")
        db = SyncedFiles(self.option(ctx, "synced_db"))
        missing: list[tuple[str, str]] = []  # (reference as written, the file it needs)

        def replace(ref: css_urls.Ref) -> str | None:
            target = local_target(ref.url, ctx.original, os.fsencode(root), base)
            if target is None or not os.path.isfile(target[0]):
                return None
            synced = db.url(target[0], server)
            current = ctx.current_name(target[0]) if ctx.current_name is not None else None
            if synced is None:
                missing.append((ref.url, os.fsdecode(target[0])))
                return None
            if current is not None and current != synced[1]:
                missing.append((ref.url, f"{os.fsdecode(target[0])} (its new version {os.fsdecode(current)})"))
                return None
            ctx.references.append((target[0], synced[1]))
            return with_suffix(synced[0], target[1])

        try:
            out_data = css_urls.rewrite(data, replace)
        finally:
            db.close()
        if missing:
            wait = float(self.option(ctx, "reference_wait") or REFERENCE_WAIT)
            if ctx.waited < wait:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                shown = ", ".join(file for _, file in missing[:3])
                raise RetryLater(f"not synced to server {server!r} yet: {shown}{more}")
            for url, file in missing:
                ctx.notes.append(
                    f"url({url}) left as it was: {file} still not synced to server {server!r}"
                    f" after {ctx.waited:.0f} s (reference_wait)"
                )
        if out_data is data:
            return Output(ctx.input, ctx.basename)
        out = ctx.work_file(b"out.css")
        with open(out, "xb") as f:
            f.write(out_data)
        return Output(out, ctx.basename)
