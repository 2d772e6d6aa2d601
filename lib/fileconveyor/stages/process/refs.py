"""fc-process's reference graph: which CSS file references which source file, under which name.

link_updater rewrites a stylesheet's references to the names its files have on the destination.  With
unique_filename, a changed image (or an ``@import``ed stylesheet) gets a new name; the stylesheets that
reference it must then be processed and published again, or they point at a name that is being deleted.

The graph lives in fc-process's state file (docs/css.md):

- ``css_refs(css, ref, name)``: the stylesheet at source path ``css``, as last emitted, references the source
  file ``ref`` under the synced name ``name``;
- ``css_events(css, line)``: the event that stylesheet was last processed for, to queue it again.

Both are written by ``record`` in the transaction that commits the stylesheet's output.  When an output gives a
path a name that the graph's rows for it do not have, the stylesheets referencing it are queued again in that
same transaction (``StageContext.enqueue_in``): a kill -9 keeps both or neither.  The event that carries a
stylesheet's references on to fc-transport (field ``references``) lets fc-transport keep an old name until no
published stylesheet uses it (transport_pins.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable

from ... import events as E
from ...digests import blake2b

MIGRATION = """
    CREATE TABLE css_refs(css BLOB NOT NULL, ref BLOB NOT NULL, name BLOB NOT NULL, PRIMARY KEY(css, ref));
    CREATE INDEX css_refs_ref ON css_refs(ref);
    CREATE TABLE css_events(css BLOB PRIMARY KEY, line BLOB NOT NULL);
"""


def references_field(refs: Iterable[tuple[bytes, bytes]]) -> list[dict]:
    """The ``references`` field of an output event: [{"path": source path, "name": synced name}, ...]."""
    out = []
    for path, name in dict.fromkeys(refs):
        ref: dict = {}
        E.put_path(ref, "path", path)
        E.put_path(ref, "name", name)
        out.append(ref)
    return out


def parse_references(ev: dict) -> list[tuple[bytes, bytes]] | None:
    """(path, name) pairs of an event's ``references``; None when it has none or they are malformed."""
    value = ev.get("references")
    if not isinstance(value, list):
        return None
    try:
        return [(E.get_path(r, "path"), E.get_path(r, "name")) for r in value if isinstance(r, dict)]
    except E.EventError:
        return None


def record_references(db: sqlite3.Connection, out: dict, event: dict) -> bool:
    """Keep what a stylesheet's output references (or forget a deleted one); whether it had references."""
    path = E.get_path(out, "path")
    if out.get("kind") == "deleted":
        db.execute("DELETE FROM css_refs WHERE css=?", (path,))
        db.execute("DELETE FROM css_events WHERE css=?", (path,))
        return False
    refs = parse_references(out)
    if refs is None or "error" in out:
        return False
    db.execute("DELETE FROM css_refs WHERE css=?", (path,))
    db.executemany("INSERT OR REPLACE INTO css_refs(css, ref, name) VALUES (?, ?, ?)", [(path, r, n) for r, n in refs])
    line = E.encode({k: v for k, v in event.items() if k != "hop"})
    db.execute("INSERT OR REPLACE INTO css_events(css, line) VALUES (?, ?)", (path, line))
    return True


def dependents(db: sqlite3.Connection, path: bytes, name: bytes) -> list[dict]:
    """Events to process again the stylesheets whose last output references ``path`` under another name than
    ``name``, the one it has now; refreshed (size, mtime, a new id) from the file as it is now.  A stylesheet
    that ``path`` itself imports is left out (two stylesheets importing each other would never settle)."""
    rows = db.execute(
        "SELECT DISTINCT e.css, e.line FROM css_refs r JOIN css_events e ON e.css = r.css"
        " WHERE r.ref = ? AND r.name != ? AND r.css != ? AND r.css NOT IN (SELECT ref FROM css_refs WHERE css = ?)",
        (path, name, path, path),
    ).fetchall()
    return _again(rows)


def outdated(db: sqlite3.Connection, css: bytes) -> list[dict]:
    """The event to process stylesheet ``css`` again when the output just recorded already uses an old name
    of a file (fc-process emitted that file's new name while the stylesheet was being processed)."""
    rows = db.execute(
        "SELECT e.css, e.line FROM css_events e WHERE e.css = ? AND EXISTS (SELECT 1 FROM css_refs r"
        " JOIN names n ON n.path = r.ref WHERE r.css = e.css AND n.name != r.name)",
        (css,),
    ).fetchall()
    return _again(rows)


def _again(rows: list[tuple[bytes, bytes]]) -> list[dict]:
    events = []
    for css, line in rows:
        try:
            ev = E.decode(bytes(line))
            st = os.stat(bytes(css))
        except (E.EventError, OSError):
            continue  # gone: its deleted event comes from fc-watch
        ev["kind"] = "modified"
        if "size" in ev:
            ev["size"] = st.st_size
        if "mtime_ns" in ev:
            ev["mtime_ns"] = str(st.st_mtime_ns) if isinstance(ev["mtime_ns"], str) else st.st_mtime_ns
        digest = blake2b(b"css-dependent\0%s\0%d" % (bytes(css), time.time_ns()), digest_size=16)
        ev["id"] = digest.hexdigest()
        events.append(ev)
    return events
