"""fc-conveyor --status: what each stage is doing, read from files only (safe on a
running conveyor, and meaningful on a stopped one): the supervisor's status file,
each stage's state file (queue depth, failures), and the synced-files database."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .. import private, records
from ..delivery import acks
from ..errors import ConfigError, RetryableError
from ..records import open_readonly
from ..stages.record.status import state_status, synced_status
from ..state import lock_holder
from .pidfile import running_pid
from .plan import Plan
from .supervisor import status_path


def gather(plan: Plan) -> dict[str, Any]:
    s = plan.config.settings
    pid = running_pid(s.pid_file)
    found_by = "pid_file"
    if pid is None:
        # Started with another --pid-file (or none of ours): the fc-conveyor running this config's stages holds
        # its state directory's lock, whatever its PID file.
        holder = lock_holder(s.state_dir / "conveyor")
        if holder is not None and holder > 0:
            pid, found_by = holder, "state_dir_lock"
    try:
        # only a regular file of ours (private.read_own): a link to a FIFO there made --status wait for ever
        sup = json.loads(private.read_own(status_path(plan)))
    except (OSError, ValueError, private.NotOurs):
        sup = {}
    live = {st["name"]: st for st in sup.get("stages", [])} if pid is not None and sup.get("pid") == pid else {}
    stages = []
    for p in plan.procs:
        entry: dict[str, Any] = {"name": p.name, "command": p.command, "label": p.label}
        st = live.get(p.name)
        entry["state"] = st["state"] if st else "not running"
        holder = lock_holder(p.state) if p.state is not None and not st else None
        if holder:
            # no fc-conveyor runs it, but some process has its state open: supervisord,
            # systemd, or a shell running the printed pipelines
            entry["state"] = "running outside fc-conveyor"
            entry["pid"] = holder
        for k in ("pid", "up_seconds", "restarts", "last_exit"):
            if st and st.get(k) is not None:
                entry[k] = st[k]
        if p.state is not None and p.state.exists() and p.command == "fc-watch":
            entry["watch"] = watch_status(str(p.state))
        elif p.state is not None and p.state.exists():
            try:
                entry["queue"] = state_status(str(p.state))
            except ConfigError as exc:
                entry["queue"] = {"note": str(exc)}
        stages.append(entry)
    out: dict[str, Any] = {
        "config": str(plan.config.path),
        "running": pid is not None,
        "pid": pid,
        "pid_file": str(s.pid_file),
        "found_by": found_by if pid is not None else None,
        "status_age_seconds": round(time.time() - sup["at"], 1) if live else None,
        "stages": stages,
    }
    target = str(s.synced_files_db)
    if plan.record_used and records.exists(target):
        try:  # a URL as written (its password too): synced_status shows it without
            out["synced"] = synced_status(target)
        except (ConfigError, RetryableError) as exc:  # a shared record's server down or refusing us
            out["synced"] = {"db": records.shown(target), "note": str(exc)}
    return out


def watch_status(path: str) -> dict[str, Any]:
    """How many files fc-watch knows, and how many of its lines its readers have not
    acknowledged yet (the work in flight downstream of it)."""
    try:
        db = open_readonly(path, what="fc-watch state file")
        try:
            (files,) = db.execute("SELECT count(*) FROM files WHERE kind<>?", (ord("d"),)).fetchone()
            (last,) = db.execute("SELECT value FROM meta WHERE name='last_batch'").fetchone()
            acked = acks.lowest(db)
        finally:
            db.close()
    except (ConfigError, sqlite3.DatabaseError, TypeError) as exc:
        return {"note": str(exc)}
    return {"files": files, "unacknowledged": max(0, last - acked) if acked is not None else None}


def format_status(st: dict[str, Any]) -> str:
    lines = [
        f"{st['config']}: "
        + (
            "not running"
            if not st["running"]
            else f"running (pid {st['pid']}, PID file {st['pid_file']})"
            if st.get("found_by") != "state_dir_lock"
            else f"running (pid {st['pid']}, found by the lock on its state directory; its PID file is not "
            f"{st['pid_file']})"
        )
    ]
    width = max((len(x["name"]) for x in st["stages"]), default=0)
    for x in st["stages"]:
        text = f"  {x['name']:<{width}}  {x['state']}"
        if "up_seconds" in x:
            text += f" (pid {x['pid']}, up {x['up_seconds']:.0f} s)"
        elif "pid" in x:
            text += f" (pid {x['pid']})"
        if x.get("restarts"):
            text += f", restarted {x['restarts']}x (last exit {x.get('last_exit')})"
        w = x.get("watch")
        if w and "note" not in w:
            text += f", {w['files']} files known"
            if w["unacknowledged"]:
                text += f", {w['unacknowledged']} line(s) not yet acknowledged downstream"
        q = x.get("queue")
        if q and "note" not in q:
            text += f", {q['queued']} queued"
            if q["retrying"]:
                text += f" ({q['retrying']} waiting to retry)"
            failed = sum(q.get("failed", {}).values())
            if failed:
                text += f", {failed} failed"
            if q.get("quarantined"):
                text += f", {q['quarantined']} set aside (quarantine)"
        lines.append(text + f"   [{x['label']}]")
    syn = st.get("synced")
    if syn and "note" in syn:
        lines.append(f"{syn['db']}: cannot be read now: {syn['note']}")
    elif syn:
        lines.append(f"{syn['db']}: {sum(syn['synced'].values())} synced file(s)")
        for server, n in syn["synced"].items():
            failed = syn["failed"].get(server)
            lines.append(f"  {server}: {n} synced" + (f", {failed} failed" if failed else ""))
        if syn["scheduled_deletions"] or syn["deleted_at_source"]:
            lines.append(f"  source deletions: {syn['scheduled_deletions']} scheduled, {syn['deleted_at_source']} done")
    return "\n".join(lines) + "\n"


def to_json(st: dict[str, Any]) -> str:
    return json.dumps(st, indent=2) + "\n"
