"""fc-transport keeps an old remote name while a published stylesheet still references it (docs/css.md).

fc-process's link_updater puts the files a stylesheet references, and the names it used, in the event's
``references`` field.  fc-transport *pins* those names to the stylesheet's remote file when it uploads it, per
destination: table ``pins(server, css, ref, name)`` (``css``: the stylesheet's remote name), kept in memory too
(workers and the old-files thread read it).  When a file gets a new remote name (unique_filename) and its old
name is pinned, the old name is not deleted: its ``old_deletions`` row is *held* (``held = 1``, not
scheduled).  A pin goes when the remote file that holds it goes (an old stylesheet name deleted, a stylesheet
deleted) or is overwritten with other references; a name no pin holds any more is released: its row is
scheduled like any old name (``--delete-old-after``, at once by default).  A stylesheet that references an
old name nothing keeps (fc-process made it before the file's new name came) is not sent: its next version,
with the new name, follows.  An old stylesheet kept because
another stylesheet imports it keeps what it references in turn.  Everything is written in the transaction that
records the upload or deletion, so a kill -9 redoes it and finds the same pins; a stylesheet's pins are also
committed before it is sent (``TransportStage._pin_ahead``): killed after the upload and before that transaction,
the stylesheet stays published, and its line may come again only after a change that supersedes a name it uses.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

MIGRATION = """
    CREATE TABLE pins(server TEXT NOT NULL, css BLOB NOT NULL, ref BLOB NOT NULL, name BLOB NOT NULL,
                      PRIMARY KEY(server, css, ref));
    ALTER TABLE old_deletions ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
"""

Ref = tuple[bytes, bytes]  # (source path of the referenced file, its remote base name)


class Pins:
    """(server, remote name of a stylesheet) -> the (path, name) it references; how many stylesheets pin each."""

    def __init__(self) -> None:
        self.by_css: dict[tuple[str, bytes], frozenset[Ref]] = {}
        self.count: Counter[tuple[str, bytes, bytes]] = Counter()

    def load(self, db: sqlite3.Connection) -> None:
        rows: dict[tuple[str, bytes], set[Ref]] = {}
        for server, css, ref, name in db.execute("SELECT server, css, ref, name FROM pins"):
            rows.setdefault((server, bytes(css)), set()).add((bytes(ref), bytes(name)))
        for (server, css), refs in rows.items():
            self.set(server, css, refs)

    def set(self, server: str, css: bytes, refs: Iterable[Ref] | None) -> list[Ref]:
        """The remote stylesheet ``css`` now references ``refs`` (None: it is gone); the names no stylesheet
        pins any more."""
        new = frozenset(refs or ())
        old = self.by_css.pop((server, css), frozenset())
        if new:
            self.by_css[(server, css)] = new
        for ref, name in new - old:
            self.count[(server, ref, name)] += 1
        released = []
        for ref, name in old - new:
            key = (server, ref, name)
            self.count[key] -= 1
            if self.count[key] <= 0:
                del self.count[key]
                released.append((ref, name))
        return released

    def stale(self, server: str, refs: Iterable[Ref], current: Mapping[tuple[str, bytes], bytes]) -> list[Ref]:
        """The references of a stylesheet about to be sent that name neither the file's current remote name
        (``current``: (server, path) -> remote) nor an old name kept for another stylesheet: that old name is
        deleted or about to be, and this version of the stylesheet must not be published (fc-process processes
        it again for the new name).  A file this fc-transport never sent is not judged."""
        out = []
        for ref, name in refs:
            now = current.get((server, ref))
            if now is not None and os.path.basename(now) != name and not self.count.get((server, ref, name)):
                out.append((ref, name))
        return out

    def pinned(self, server: str, path: bytes, remote: bytes) -> bool:
        """Whether a published stylesheet references the file at ``path`` by remote name ``remote``."""
        return self.count.get((server, path, os.path.basename(remote)), 0) > 0


def save(db: sqlite3.Connection, server: str, css: bytes, refs: frozenset[Ref] | None) -> None:
    db.execute("DELETE FROM pins WHERE server=? AND css=?", (server, css))
    if refs:
        db.executemany(
            "INSERT OR REPLACE INTO pins(server, css, ref, name) VALUES (?, ?, ?, ?)",
            [(server, css, ref, name) for ref, name in refs],
        )


def held_rows(db: sqlite3.Connection, server: str, released: Sequence[Ref]) -> list[tuple[int, bytes, bytes, bytes]]:
    """The held old_deletions rows (id, path, remote, event) of names just released on ``server``."""
    rows = []
    for ref, name in released:
        for rid, remote, event in db.execute(
            "SELECT id, remote, event FROM old_deletions WHERE held=1 AND server=? AND path=?", (server, ref)
        ):
            if os.path.basename(bytes(remote)) == name:
                rows.append((int(rid), ref, bytes(remote), bytes(event or b"")))
    return rows
