"""Switching from the old daemon: its synced_files.db and persistent_data.db, built here from the seed's schemas,
with the pickles Python 2's cPickle wrote (protocol 2), and pickles that try to run code."""

from __future__ import annotations

import os
import pickle
import sqlite3
import struct
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.cli import record as record_cli
from fileconveyor.stages.record.old_daemon import RefusedPickle, load_item
from tests.conftest import call
from tests.record.conftest import decode, make_site

CREATED, MODIFIED, DELETED = 1, 2, 4


def py2_pickle(path: bytes, event: int, unicode: bool = False) -> bytes:
    """cPickle.dumps((path, event), 2) as Python 2 wrote it: a str is SHORT_BINSTRING, a unicode BINUNICODE."""
    if unicode:
        body = b"X" + struct.pack("<I", len(path)) + path
    else:
        body = (b"U" + bytes([len(path)]) if len(path) < 256 else b"T" + struct.pack("<i", len(path))) + path
    return b"\x80\x02" + body + b"q\x01K" + bytes([event]) + b"\x86q\x02."


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def old_synced_db(path: Path, rows: list[tuple]) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    con.execute("CREATE UNIQUE INDEX file_unique_per_server ON synced_files (input_file, server)")
    # Python 2 stored str as TEXT, whatever its bytes: CAST keeps the bytes and makes them TEXT
    con.executemany("INSERT INTO synced_files VALUES (CAST(? AS TEXT), ?, ?, ?)", rows)
    con.commit()
    con.close()


def test_import_synced_files_db(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    old = tmp_path / "old_synced_files.db"
    a_css = str(site / "css" / "a.css")
    latin = bytes(site) + b"/caf\xe9.css"
    old_synced_db(
        old,
        [
            (a_css.encode(), "a_1f2e.css", "http://cdn.example/css/a_1f2e.css", "origin pull cdn"),
            (a_css.encode(), "a.css", "ftp://ftp.example/css/a.css", "ftp push cdn"),
            (latin, "caf.css", "http://cdn.example/caf.css", "origin pull cdn"),
            (b"/elsewhere/x.js", "x.js", "http://cdn.example/x.js", "origin pull cdn"),
        ],
    )
    db = tmp_path / "synced.db"
    # fc-record already knows one of them, newer: it is kept
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    con.execute("CREATE UNIQUE INDEX file_unique_per_server ON synced_files (input_file, server)")
    con.execute("INSERT INTO synced_files VALUES (?, 'a.css', 'ftp://new/a.css', 'ftp push cdn')", (a_css,))
    con.commit()
    con.close()
    res = call(record_cli.main, ["--db", str(db), "--import-db", str(old), "--source", f"site={site}"])
    assert res.status == 0, res.stderr
    assert "imported 3 row(s)" in res.stderr and "1 already" in res.stderr
    con = sqlite3.connect(db)
    got = con.execute(
        "SELECT input_file, transported_file_basename, url, server, source, rel FROM synced_files ORDER BY url"
    ).fetchall()
    assert (a_css, "a_1f2e.css", "http://cdn.example/css/a_1f2e.css", "origin pull cdn", "site", "css/a.css") in got
    assert (a_css, "a.css", "ftp://new/a.css", "ftp push cdn", None, None) in got
    assert (latin, "caf.css", "http://cdn.example/caf.css", "origin pull cdn", "site", b"caf\xe9.css") in got
    assert ("/elsewhere/x.js", "x.js", "http://cdn.example/x.js", "origin pull cdn", None, None) in got
    # importing again changes nothing
    again = call(record_cli.main, ["--db", str(db), "--import-db", str(old)])
    assert "imported 0 row(s)" in again.stderr
    assert con.execute("SELECT count(*) FROM synced_files").fetchone() == (4,)


def old_queue_db(path: Path, tables: dict[str, list[bytes]]) -> None:
    con = sqlite3.connect(path)
    for table, items in tables.items():
        if table == "pipeline_queue":  # the August-2011 schema, with the key column
            con.execute(f"CREATE TABLE {table}(id INTEGER PRIMARY KEY AUTOINCREMENT, item pickle, key CHAR(32))")
            con.execute(f"CREATE UNIQUE INDEX unique_key ON {table} (key)")
            con.executemany(f"INSERT INTO {table}(item, key) VALUES (?, hex(randomblob(16)))", [(i,) for i in items])
        else:
            con.execute(f"CREATE TABLE {table}(id INTEGER PRIMARY KEY AUTOINCREMENT, item pickle)")
            con.executemany(f"INSERT INTO {table}(item) VALUES (?)", [(i,) for i in items])
    con.commit()
    con.close()


def test_import_queue_turns_pending_work_into_events_and_refuses_code(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    marker = tmp_path / "pwned"
    root = bytes(site)
    old = tmp_path / "persistent_data.db"
    old_queue_db(
        old,
        {
            "pipeline_queue": [
                py2_pickle(root + b"/css/a.css", CREATED),
                py2_pickle(root + b"/gone.css", DELETED),
                py2_pickle(root + b"/index.html", MODIFIED, unicode=True),
                pickle.dumps(Evil(marker)),  # would run `touch` if unpickled naively
                pickle.dumps(Evil(marker), protocol=0),
                b"\x80\x02cposix\nsystem\nq\x00U\x05touchq\x01\x85q\x02Rq\x03.",  # hand-made, no class needed
                pickle.dumps([str(site / "css" / "b.css"), 1]),  # a list is not the daemon's tuple
                b"garbage",
            ],
            "pipeline_list": [py2_pickle(root + b"/img/logo.png", MODIFIED)],
            "failed_files_list": [py2_pickle(root + b"/css/a.css", MODIFIED), pickle.dumps(("/outside/x.css", 1))],
            "files_to_delete_list": [pickle.dumps((str(site / "css" / "b.css"), 1.5e9))],
        },
    )
    res = call(record_cli.main, ["--import-queue", str(old), "--source", f"site={site}"])
    assert not marker.exists(), "a pickle ran code"
    assert res.status == 1  # refused items are failures
    assert res.stderr.count("refused item") == 5
    assert "os.system" in res.stderr or "posix.system" in res.stderr
    assert "1 queued path(s) are under no --source" in res.stderr
    assert "1 item(s) of files_to_delete_list not imported" in res.stderr
    evs = decode(res.stdout)
    for line in res.stdout.splitlines():
        E.decode(line + b"\n")  # every line is a valid v1 event
    got = [(e["kind"], e["rel"], e["source"], e["root"], e["via"]) for e in evs]
    assert got == [
        ("modified", "img/logo.png", "site", str(site), "import"),  # in flight when the daemon stopped: first
        ("modified", "css/a.css", "site", str(site), "import"),  # created, then failed when modified: the last
        ("deleted", "gone.css", "site", str(site), "import"),
        ("modified", "index.html", "site", str(site), "import"),
    ]
    a = next(e for e in evs if e["rel"] == "css/a.css")
    assert a["size"] == (site / "css" / "a.css").stat().st_size


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps(Evil(Path("/tmp/never"))),
        pickle.dumps(("/a", 1.5)),
        pickle.dumps(("relative/a", 1)),
        pickle.dumps({"path": "/a"}),
        pickle.dumps(("/a", 1, 2)),
        b"\x80\x02",
    ],
)
def test_load_item_refuses_anything_but_a_plain_tuple(data: bytes) -> None:
    with pytest.raises(RefusedPickle):
        load_item(data)


def test_load_item_takes_python2_and_python3_pickles() -> None:
    assert load_item(py2_pickle(b"/srv/caf\xe9.css", 2)) == (b"/srv/caf\xe9.css", 2)
    assert load_item(py2_pickle("/srv/café.css".encode(), 1, unicode=True)) == ("/srv/café.css".encode(), 1)
    assert load_item(pickle.dumps(("/srv/a.css", 4))) == (b"/srv/a.css", 4)
