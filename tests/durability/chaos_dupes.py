"""Where the chaos run's duplicate uploads come from (bench/chaos.py, issue 18: a kill should cost at most the
work that was really in flight).

- ``UploadTrace`` sees every upload as it happens: a file:// upload is a rename onto the final name, so
  ``inotifywait`` on the destination reports each one (a hash of what arrived is taken at once);
- ``pending`` reads, right after a kill and before the restart, which events the killed stage held unfinished
  (its ``inbox``): the work really in flight in it;
- ``attribute`` calls an upload a duplicate when the destination already held those bytes under that name (the
  previous upload of the name had the same hash, no deletion in between), and charges it to the kills between
  the two uploads: which stages, and whether the file was in flight in one of them (an ``inbox`` row for that
  name and size: taken, and, since its first upload is there, sent but not yet recorded as done) or only sent
  again because something else (an acknowledgement, a replay, fc-watch's written mark) lagged.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ALL = "all"  # a round that killed every stage


@dataclass
class Kill:
    at: float  # time.monotonic() just after the kill
    stages: tuple[str, ...]
    pending: set[tuple[str, int]] = field(default_factory=set)  # (destination name, size) of inbox rows


@dataclass
class Upload:
    at: float
    name: str  # relative to the destination
    digest: str | None  # None: a deletion (or the file was gone before it could be read)
    ino: int = 0
    size: int = 0
    head: bytes = b""  # the first bytes of what arrived (bench/scale_chaos.py reads a version there)


class UploadTrace:
    """Uploads and deletions in the destination, stamped as they happen (inotifywait -m -r)."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.seen: list[Upload] = []
        self.proc = subprocess.Popen(
            ["inotifywait", "-m", "-r", "-e", "moved_to,delete", "--format", "%e %w%f", str(dest)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for line in self.proc.stderr:  # "Setting up watches." then "Watches established."
            if b"established" in line:
                break
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            ev, _, path = line.rstrip(b"\n").partition(b" ")
            name = os.path.basename(path)
            if b"ISDIR" in ev or b".fc-tmp" in name or name.startswith(b".fc-"):
                continue
            rel = os.path.relpath(os.fsdecode(path), self.dest)
            if not ev.startswith(b"MOVED_TO"):
                self.seen.append(Upload(now, rel, None))
                continue
            try:
                with open(path, "rb") as f:
                    ino, data = os.fstat(f.fileno()).st_ino, f.read()
            except OSError:
                self.seen.append(Upload(now, rel, "?"))  # replaced or deleted already: an upload, content unknown
                continue
            digest = hashlib.blake2b(data, digest_size=8).hexdigest()
            self.seen.append(Upload(now, rel, digest, ino, len(data), data[:16]))

    def stop(self) -> list[Upload]:
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(5)
        return self.seen


def pending(state_db: Path, dest_name) -> set[tuple[str, int]]:
    """(destination name, size) of the events a killed stage held unfinished: its inbox rows."""
    if not state_db.exists():
        return set()
    out = set()
    conn = sqlite3.connect(state_db, timeout=5)
    try:
        rows = conn.execute("SELECT line FROM inbox").fetchall()
    except sqlite3.Error:
        return set()
    finally:
        conn.close()
    for (line,) in rows:
        try:
            ev = json.loads(line)
            out.add((dest_name(ev["rel"]), int(ev.get("size") or 0)))
        except (ValueError, KeyError, TypeError):
            continue
    return out


@dataclass
class Dupes:
    uploads: int = 0
    by_kill: Counter[tuple[str, bool]] = field(default_factory=Counter)  # (kills between, in flight) -> count
    per_name: Counter[str] = field(default_factory=Counter)  # duplicates per destination name

    @property
    def total(self) -> int:
        return sum(self.by_kill.values())

    def summary(self) -> str:
        kinds = sorted({k for k, _ in self.by_kill}, key=lambda k: (-self.of(k), k))
        parts = [f"{k} {self.of(k)} ({self.by_kill[k, True]} unrecorded in a killed stage)" for k in kinds]
        top = max(self.per_name.values(), default=0)
        return (
            f"uploads seen {self.uploads}, duplicates {self.total} (at most {top} for one name); "
            f"after kills of: {', '.join(parts) or '-'}"
        )

    def of(self, kind: str) -> int:
        return self.by_kill[kind, True] + self.by_kill[kind, False]


def attribute(uploads: list[Upload], kills: list[Kill], stages: int) -> Dupes:
    """Duplicates among ``uploads``, each charged to the kills between it and the upload it repeats."""
    out = Dupes()
    last: dict[str, Upload] = {}
    for up in sorted(uploads, key=lambda u: u.at):
        if up.digest is None:
            last.pop(up.name, None)
            continue
        out.uploads += 1
        prev = last.get(up.name)
        last[up.name] = up
        # same bytes, and really a second file (a read that raced with a later replace sees one inode twice)
        if prev is None or up.digest == "?" or prev.digest != up.digest or prev.ino == up.ino:
            continue
        between = [k for k in kills if prev.at < k.at <= up.at]
        kinds = sorted({ALL if len(k.stages) == stages else k.stages[0] for k in between})
        in_flight = any((up.name, up.size) in k.pending for k in between)
        out.by_kill["+".join(kinds) or "no kill", in_flight] += 1
        out.per_name[up.name] += 1
    return out
