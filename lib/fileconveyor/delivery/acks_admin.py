"""``--readers`` and ``--forget-reader``: the readers a writer's state file knows, and forgetting one of them.

A reader registers with its writer by writing rows into the writer's ``acks`` table (delivery/acks.py); the writer
keeps, and re-sends to whichever reader comes, every line after the lowest acknowledgement there.  A reader that
registered and never comes back (an fc-transport tried once against a mistyped port, its state file deleted since)
made every later ``fc-watch --scan-once | jq`` show the same old lines again (docs/durability.md, "A reader that
never comes back").  These are the commands that end it, for fc-watch and every stage that writes events
(cli/watch.py and cli/_stage.py only call them).

Safe while the writer runs: the writer reads the table from its file each time it needs it (its floor, its
replays, the readers it waits for at its end), never from a copy in memory, so a row deleted in a transaction of
ours is gone for it at its next look.  A reader whose state file another process holds (its ``.lock``: the reader
is running) is not forgotten: it would write its row again with its next acknowledgement, and meanwhile its writer
could drop lines it had not acknowledged yet.  The check and the deletion are one transaction on the writer's
file, so no acknowledgement comes in between.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .. import private
from ..errors import ConfigError, StateBusy, UsageError
from . import ack_check, acks

BUSY_MS = 10_000  # how long to wait for the writer's own transaction (a commit of its rows: milliseconds)


@dataclass(frozen=True)
class Reader:
    """One reader as ``--readers`` shows it."""

    path: str  # its state file
    seq: int  # the last seq of ours it acknowledged
    behind: int  # lines of ours after that (kept, and re-sent at our start, for it)
    at: float  # when it last acknowledged
    state: str  # "present", "gone" or "unknown" (acks.state_gone)
    pid: int | None  # a process holding its state file (running), when one is seen
    note: str  # why it no longer counts ("", "another epoch", "silent for over 7 days")


def open_writer(path: str | Path) -> sqlite3.Connection:
    """A connection to the writer's state file ``path`` (fc-watch's or a stage's), which may be in use by the
    writer: opened as a reader opens it to acknowledge (ack_check.open_state: never created, its -wal and -shm
    looked at first), and only when it is ours and a File Conveyor state file."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ConfigError(f"state file {name}: no such file")
    if problem := private.foreign_problem(name):
        raise ConfigError(f"state file {problem}")
    try:
        conn = ack_check.open_state(name)
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        epoch = ack_check.state_epoch(conn)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"state file {name}: {exc}") from None
    if epoch is None:
        conn.close()
        raise ConfigError(f"{name} is not the state file of a File Conveyor writer (no acks table)")
    return conn


def list_readers(path: str | Path, now: float | None = None) -> list[Reader]:
    """The readers the writer's state file ``path`` knows."""
    now = time.time() if now is None else now
    conn = open_writer(path)
    try:
        epoch = ack_check.state_epoch(conn)
        last = ack_check.high_seq(conn) or 0
        rows = acks.known(conn)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"state file {os.fspath(path)}: {exc}") from None
    finally:
        conn.close()
    out = []
    for k in rows:
        gone = acks.state_gone(k.reader)
        note = (
            "of an earlier state of this writer"
            if k.epoch != epoch
            else "silent for over 7 days: no longer counted"
            if k.at < now - acks.READER_EXPIRY
            else ""
        )
        state = "unknown" if gone is None else "gone" if gone else "present"
        out.append(Reader(k.reader, k.seq, max(0, last - k.seq), k.at, state, acks.holder(k.reader), note))
    return out


def forget_reader(path: str | Path, reader: str) -> Reader:
    """Forget ``reader`` (its state file's path, as listed or as the user spells it) in the writer's state file
    ``path``: one transaction that looks for a process holding the reader's state file and deletes its row.
    UsageError when it is no reader there, StateBusy when it is running."""
    conn = open_writer(path)
    try:
        conn.execute("BEGIN IMMEDIATE")  # no acknowledgement between our look and the deletion
        try:
            found = [r for r in acks.known(conn) if _names(r.reader, reader)]
            if not found:
                raise UsageError(_unknown(path, reader, acks.known(conn)))
            k = found[0]
            pid = acks.holder(k.reader)
            if pid is not None:
                raise StateBusy(
                    f"reader {acks.shown(k.reader)} is running (pid {pid}, which holds its state file): it would "
                    f"register again with its next acknowledgement; stop it first (kill {pid}), or let it finish its "
                    "lines"
                )
            acks.forget(conn, k.reader)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        epoch = ack_check.state_epoch(conn)
        last = ack_check.high_seq(conn) or 0
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"state file {os.fspath(path)}: {exc}") from None
    finally:
        conn.close()
    gone = acks.state_gone(k.reader)
    return Reader(
        k.reader,
        k.seq,
        max(0, last - k.seq) if k.epoch == epoch else 0,
        k.at,
        "unknown" if gone is None else "gone" if gone else "present",
        None,
        "",
    )


def _names(known: str, given: str) -> bool:
    """Whether the user's ``given`` path names the reader ``known`` (stored absolute, as the reader spelled it):
    the same string, the same absolute path, or, both there, the same file."""
    if known == given or known == os.path.abspath(given) or os.path.normpath(known) == os.path.abspath(given):
        return True
    return ack_check.same_file(known, given)


def _unknown(path: str | Path, given: str, rows: list[acks.Known]) -> str:
    names = ", ".join(acks.shown(k.reader) for k in rows) if rows else "none"
    return f"{acks.shown(given)} is not a reader known to {os.fspath(path)} (its readers: {names}); nothing forgotten"


def command(state: str | Path, forget: str | None) -> str:
    """What ``--readers`` (``forget`` None) or ``--forget-reader FORGET`` prints, having done it."""
    if forget is None:
        return format_readers(state, list_readers(state))
    r = forget_reader(state, forget)
    text = f"forgot reader {acks.shown(r.path)}"
    text += f": {r.behind} line(s) no longer kept for it\n" if r.behind else "\n"
    if r.state == "present":
        text += (
            "its state file is still there: run again, that reader registers anew and is sent what its writer "
            "still has after its mark (fc-watch: every file's last event, but not the deletions made meanwhile)\n"
        )
    return text


def format_readers(path: str | Path, readers: list[Reader], now: float | None = None) -> str:
    """``--readers``: a line per reader."""
    now = time.time() if now is None else now
    if not readers:
        return f"{os.fspath(path)}: no File Conveyor reader has acknowledged to this state file\n"
    lines = [f"{os.fspath(path)}: {len(readers)} reader(s)"]
    for r in readers:
        text = f"  {acks.shown(r.path)}  acknowledged {r.seq}"
        text += f", {r.behind} line(s) after it kept for it" if r.behind else ", up to date"
        text += f", last seen {_ago(now - r.at)} ago, state file {r.state}"
        if r.pid is not None:
            text += f", running (pid {r.pid})"
        if r.note:
            text += f" ({r.note})"
        lines.append(text)
    return "\n".join(lines) + "\n"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
