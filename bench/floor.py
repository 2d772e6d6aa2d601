#!/usr/bin/env python3
"""The floor: what a Python pipeline of fc's shape costs with nothing but the work itself (issue 18).

``bench/pipeline_bench.py`` runs it beside the fc shapes and the peers ("floor 3-stage", "floor 5-stage", local
folder only), so one run tells the cost of Python and of five processes joined by pipes (start-up, JSON in and
out of every stage, the copy's system calls) from the cost of what fc adds on top: durable state and
acknowledgements, replays, the checks beneath a root, temporary names checked against planted links, reports.

NOT a tool to use: no durability (a kill loses lines), no checks (a symlink in the tree is followed, a file
changed while copied is published), no error handling.  Each stage is one function::

    floor.py watch SRC | floor.py filter | floor.py process | floor.py transport DEST | floor.py record DB
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys


def watch(top: str) -> None:
    """Every file under ``top``, sorted, as an event line (path, size, mtime, inode: what fc-watch reports)."""
    write = sys.stdout.write
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            event = {"v": 1, "op": "upsert", "root": top, "path": path}
            event |= {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
            write(json.dumps(event) + "\n")


def filter_(_: str | None) -> None:
    """fc-filter --extensions bin: each line decoded, kept or dropped, passed on as it came."""
    write = sys.stdout.write
    for line in sys.stdin:
        if json.loads(line)["path"].endswith(".bin"):
            write(line)


def process(_: str | None) -> None:
    """fc-process --chain filename.SpacesToUnderscores: each line decoded, its name changed, encoded again."""
    write = sys.stdout.write
    for line in sys.stdin:
        event = json.loads(line)
        event["name"] = os.path.basename(event["path"]).replace(" ", "_")
        write(json.dumps(event) + "\n")


def transport(dest: str) -> None:
    """fc-transport to a local folder: a temporary name, sendfile, rename; the event with its URL."""
    write = sys.stdout.write
    dirs: dict[str, int] = {}
    for line in sys.stdin:
        event = json.loads(line)
        head, name = os.path.split(os.path.relpath(event["path"], event["root"]))
        name = event.get("name", name)
        dfd = dirs.get(head)
        if dfd is None:
            os.makedirs(os.path.join(dest, head), exist_ok=True)
            dfd = dirs[head] = os.open(os.path.join(dest, head), os.O_RDONLY | os.O_DIRECTORY)
        src = os.open(event["path"], os.O_RDONLY)
        tmp = f".{name}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dfd)
        os.sendfile(out, src, 0, event["size"])
        os.close(out)
        os.close(src)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        event["url"] = "file://" + os.path.join(dest, head, name)
        write(json.dumps(event) + "\n")


def record(db: str) -> None:
    """fc-record: each event's row, a commit per 1,000."""
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE IF NOT EXISTS synced (path TEXT PRIMARY KEY, url TEXT, size INT, mtime_ns INT)")
    rows: list[tuple] = []
    for line in sys.stdin:
        event = json.loads(line)
        rows.append((event["path"], event["url"], event["size"], event["mtime_ns"]))
        if len(rows) >= 1000:
            con.executemany("INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?)", rows)
            con.commit()
            rows = []
    con.executemany("INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?)", rows)
    con.commit()


STAGES = {"watch": watch, "filter": filter_, "process": process, "transport": transport, "record": record}


def argv(shape: str, tree: str, dest: str, db: str) -> list[list[str]]:
    """The floor's stages, as pipeline_bench runs them: ``shape`` "3" or "5"."""
    me = [sys.executable, os.path.abspath(__file__)]
    middle = [[*me, "filter"], [*me, "process"]] if shape == "5" else []
    return [[*me, "watch", tree], *middle, [*me, "transport", dest], [*me, "record", db]]


if __name__ == "__main__":
    STAGES[sys.argv[1]](sys.argv[2] if len(sys.argv) > 2 else None)  # type: ignore[operator]
