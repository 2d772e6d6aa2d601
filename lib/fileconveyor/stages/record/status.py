"""``fc-record --status``: counts from the synced-files record and the queue depth of stage state files.

Everything is opened read only, so it is safe on a running pipeline.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...delivery.durable import outbox_lines
from ...errors import ConfigError
from ...records import has_table, locate, open_reader, open_readonly, shown


def synced_status(target: str) -> dict[str, Any]:
    """Counts from the record (a file or a postgresql:// URL, shown without its password)."""
    db = open_reader(target)
    try:
        scheduled, deleted = db.deletions()
        return {
            "db": shown(locate(target)),
            "synced": db.synced_by_server(),
            "failed": db.failed_by_server(),
            "scheduled_deletions": scheduled,
            "deleted_at_source": deleted,
        }
    finally:
        db.close()


def state_status(path: str) -> dict[str, Any]:
    """Queue depth of one stage's state file (any fc stage after fc-watch)."""
    db = open_readonly(path, what="state file")
    try:
        if not has_table(db, "inbox"):
            return {"note": "no queue: not the state file of a stage that reads events (fc-watch's?)"}
        queued, retrying = db.execute("SELECT count(*), coalesce(sum(attempts > 0), 0) FROM inbox").fetchone()
        outbox = outbox_lines(db)
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
