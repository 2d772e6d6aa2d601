"""``fc-record --status``: counts from the synced-files database and the queue depth of stage state files.

Everything is opened read only, so it is safe on a running pipeline.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from ...records import has_table, open_readonly


def synced_status(db_path: str) -> dict[str, Any]:
    db = open_readonly(db_path)
    try:
        out: dict[str, Any] = {"db": os.path.abspath(db_path), "synced": {}, "failed": {}}
        if has_table(db, "synced_files"):
            out["synced"] = dict(
                db.execute("SELECT server, count(*) FROM synced_files GROUP BY server ORDER BY server")
            )
        if has_table(db, "sync_failures"):
            out["failed"] = dict(
                db.execute("SELECT server, count(*) FROM sync_failures GROUP BY server ORDER BY server")
            )
        scheduled = deleted = 0
        if has_table(db, "source_deletions"):
            scheduled, deleted = db.execute(
                "SELECT count(*) - count(deleted_at), count(deleted_at) FROM source_deletions"
            ).fetchone()
        out["scheduled_deletions"] = scheduled
        out["deleted_at_source"] = deleted
        return out
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{db_path}: {exc}") from None
    finally:
        db.close()


def state_status(path: str) -> dict[str, Any]:
    """Queue depth of one stage's state file (any fc stage after fc-watch)."""
    db = open_readonly(path, what="state file")
    try:
        if not has_table(db, "inbox"):
            return {"note": "no queue: not the state file of a stage that reads events (fc-watch's?)"}
        queued, retrying = db.execute("SELECT count(*), coalesce(sum(attempts > 0), 0) FROM inbox").fetchone()
        (outbox,) = db.execute("SELECT count(*) FROM outbox").fetchone()
        out: dict[str, Any] = {"queued": queued, "retrying": retrying, "outbox": outbox}
        if has_table(db, "quarantine"):  # events the stage set aside (delivery/quarantine.py)
            (out["quarantined"],) = db.execute("SELECT count(*) FROM quarantine").fetchone()
        lanes = dict(db.execute("SELECT lane, count(*) FROM inbox GROUP BY lane"))
        if set(lanes) - {""}:
            out["lanes"] = lanes
        # a stage's own list of failed events (fc-transport keeps one for --retry-failed)
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%fail%'"):
            (n,) = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            out.setdefault("failed", {})[table] = n
        return out
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    finally:
        db.close()


def status(db_path: str | None, state_files: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = synced_status(db_path) if db_path else {}
    if state_files:
        out["state_files"] = {os.path.abspath(p): state_status(p) for p in state_files}
    return out


def format_status(st: dict[str, Any]) -> str:
    lines = []
    if "db" in st:
        synced = st["synced"]
        lines.append(f"{st['db']}: {sum(synced.values())} synced file record(s)")
        width = max((len(s) for s in [*synced, *st["failed"]]), default=0)
        for server, n in synced.items():
            lines.append(
                f"  {server:<{width}}  {n} synced"
                + (f", {st['failed'][server]} failed" if server in st["failed"] else "")
            )
        for server, n in st["failed"].items():
            if server not in synced:
                lines.append(f"  {server or '(no server)':<{width}}  {n} failed")
        lines.append(f"  failed: {sum(st['failed'].values())}")
        lines.append(f"  scheduled for deletion at the source: {st['scheduled_deletions']}")
        lines.append(f"  deleted at the source after sync: {st['deleted_at_source']}")
    for path, q in st.get("state_files", {}).items():
        if "note" in q:
            lines.append(f"{path}: {q['note']}")
            continue
        text = f"{path}: {q['queued']} queued"
        if q["retrying"]:
            text += f" ({q['retrying']} waiting to be retried)"
        text += f", {q['outbox']} output line(s) kept for readers"
        for table, n in q.get("failed", {}).items():
            text += f", {n} in {table}"
        if q.get("quarantined"):
            text += f", {q['quarantined']} set aside (quarantine)"
        lines.append(text)
    return "\n".join(lines) + "\n"
