"""The ``--source NAME=DIR`` roots given to fc-transport, fc-process and fc-record: the trees (as given to
fc-watch) an event's file may be read from or deleted beneath.  An event's ``root`` is as forgeable as the rest
of it, so with ``--source`` a file counts only beneath the root of that name.  A module of its own, small: every
run of those stages needs it, and what the old daemon's import and the source deletions need (record/old_daemon.py,
record/delete.py) only some runs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from . import events as E
from .plain import Value
from .sourcefile import Source as FileSource
from .sourcefile import SourceRefused


class Source(Value):
    _fields = ("name", "root")

    def __init__(self, name: str, root: bytes):
        self.name = name
        self.root = root

    def rel(self, path: bytes) -> bytes | None:
        root = self.root.rstrip(b"/") + b"/"
        return path[len(root) :] if path.startswith(root) and len(path) > len(root) else None


def find_source(sources: Sequence[Source], path: bytes) -> tuple[Source, bytes] | None:
    """The source whose root holds ``path`` (the deepest one), with the path relative to it."""
    best = None
    for src in sources:
        rel = src.rel(path)
        if rel is not None and (best is None or len(src.root) > len(best[0].root)):
            best = (src, rel)
    return best


def allowed_root(sources: Sequence[Source], source: str | None, root: bytes | None) -> bytes | None:
    """The root of ``sources`` a file of an event with this ``source`` and ``root`` may be deleted beneath:
    the one of that name whose directory is ``root`` (the same path, or the same directory once resolved).
    None when there is none: such a file is never deleted."""
    if source is None or root is None:
        return None
    for src in sources:
        if src.name == source and (src.root == root or os.path.realpath(src.root) == os.path.realpath(root)):
            return src.root
    return None


def confined(source: FileSource, ev: Mapping[str, Any], sources: Sequence[Source], who: str) -> FileSource:
    """``source`` (an event's file, sourcefile.from_event) re-rooted at the ``--source`` it belongs to; with no
    ``--source`` given, or for a processed ``file`` (checked by its work folder instead), as it is.
    SourceRefused for a root that is none of them: an event's root is as forgeable as the rest of it."""
    if not sources or source.work:
        return source
    name = ev.get("source") if isinstance(ev.get("source"), str) else None
    root = allowed_root(sources, name, source.root)
    if root is None:
        raise SourceRefused(
            f"refusing {E.display(source.path)!r}: its source {name!r} with root {E.display(source.root)!r} "
            f"is no --source given to {who}"
        )
    return source.replace(root=root)
