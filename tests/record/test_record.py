"""fc-record's database, read the way its consumers read it: plain SQL on the seed's table."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.cli import record as record_cli
from fileconveyor.records import Records
from tests.conftest import call, require_tool, unavailable
from tests.record.conftest import decode, lines, make_site, record, transport, watch

SEED_COLUMNS = ["input_file", "transported_file_basename", "url", "server"]


def test_seed_schema_as_the_drupal_module_reads_it(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    evs = watch(site, tmp_path / "w.db")
    db = tmp_path / "synced_files.db"
    res = record(db, transport(evs, None, "origin pull cdn"), tmp_path / "r.db")
    assert res.status == 0, res.stderr

    # a plain connection, no File Conveyor code, the seed's column order and unique index
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(synced_files)")]
    assert cols[:4] == SEED_COLUMNS
    idx = con.execute("SELECT sql FROM sqlite_master WHERE name='file_unique_per_server'").fetchone()[0]
    assert "UNIQUE" in idx and "(input_file, server)" in idx
    a_css = str(site / "css" / "a.css")
    (url,) = con.execute(
        "SELECT url FROM synced_files WHERE input_file = ? AND server = ?", (a_css, "origin pull cdn")
    ).fetchone()
    assert url == "http://cdn.example/css/a.css"
    assert con.execute('SELECT COUNT(*) FROM synced_files WHERE server="origin pull cdn"').fetchone() == (4,)
    row = con.execute("SELECT * FROM synced_files WHERE input_file = ?", (a_css,)).fetchone()
    assert row[:4] == (a_css, "a.css", "http://cdn.example/css/a.css", "origin pull cdn")
    con.close()

    # and with the sqlite3 shell, as users inspect it (the README's commands)
    sqlite = require_tool("sqlite3", "the seed documents synced_files.db through the sqlite3 shell")
    schema = subprocess.run([sqlite, str(db), ".schema synced_files"], capture_output=True, text=True, check=True)
    assert schema.stdout.startswith(
        "CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text"
    )
    rows = subprocess.run(
        [sqlite, str(db), "SELECT input_file, transported_file_basename, url, server FROM synced_files ORDER BY 1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert rows[0] == f"{a_css}|a.css|http://cdn.example/css/a.css|origin pull cdn"
    assert len(rows) == 4


def test_events_pass_through_unchanged(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    evs = transport(watch(site, tmp_path / "w.db"), None)
    evs[0]["my_field"] = {"kept": [1, 2]}
    res = record(tmp_path / "s.db", evs, tmp_path / "r.db")
    out = decode(res.stdout)
    assert [{k: v for k, v in e.items() if k != "hop"} for e in out] == evs
    assert all(e["hop"]["from"] == str(tmp_path / "r.db") for e in out)


def test_modified_updates_deleted_removes_error_is_a_failure(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    first = watch(site, tmp_path / "w.db")
    evs = transport(first, None) + transport(first, None, "ftp")
    assert record(db, evs, state).status == 0

    a_css = str(site / "css" / "a.css")
    (site / "css" / "a.css").write_text("body { color: blue }\n")
    (site / "index.html").unlink()
    changed = watch(site, tmp_path / "w.db")
    assert sorted(e["kind"] for e in changed) == ["deleted", "modified"]
    cdn = transport(changed, None)
    for e in cdn:  # a processor renamed it this time (unique_filename)
        if e["kind"] == "modified":
            e["remote"], e["url"], e["name"] = "css/a_1234.css", "http://cdn.example/css/a_1234.css", "a_1234.css"
    ftp = [dict(e, server="ftp", error={"stage": "fc-transport", "message": "550 denied"}) for e in changed]
    res = record(db, cdn + ftp, state)
    assert res.status == 1  # some events failed
    assert len(decode(res.stdout)) == 4

    con = sqlite3.connect(db)
    assert con.execute(
        "SELECT transported_file_basename, url FROM synced_files WHERE input_file=? AND server='cdn'", (a_css,)
    ).fetchone() == ("a_1234.css", "http://cdn.example/css/a_1234.css")
    # the failed server keeps the version it has: failures never touch synced rows
    assert con.execute(
        "SELECT transported_file_basename FROM synced_files WHERE input_file=? AND server='ftp'", (a_css,)
    ).fetchone() == ("a.css",)
    index = str(site / "index.html")
    assert con.execute("SELECT server FROM synced_files WHERE input_file=?", (index,)).fetchall() == [("ftp",)]
    fails = con.execute("SELECT input_file, server, kind, error, stage FROM sync_failures ORDER BY 1").fetchall()
    assert fails == [
        (a_css, "ftp", "modified", "550 denied", "fc-transport"),
        (index, "ftp", "deleted", "550 denied", "fc-transport"),
    ]

    # a later success clears the failure
    retry = [dict(e, server="ftp") for e in transport([e for e in changed if e["kind"] == "modified"], None)]
    assert record(db, retry, state).status == 0
    assert con.execute("SELECT count(*) FROM sync_failures").fetchone() == (1,)
    con.close()


def test_replayed_events_are_harmless(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    evs = transport(watch(site, tmp_path / "w.db"), None)
    db = tmp_path / "s.db"
    record(db, evs, tmp_path / "r1.db")
    before = sqlite3.connect(db).execute("SELECT * FROM synced_files ORDER BY 1").fetchall()
    record(db, evs, tmp_path / "r2.db")  # another state file: nothing is taken for a duplicate
    after = sqlite3.connect(db).execute("SELECT * FROM synced_files ORDER BY 1").fetchall()
    assert [r[:15] for r in after] == [r[:15] for r in before]  # all but synced_at


def test_name_that_is_not_utf8_is_stored_as_its_bytes(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    raw = bytes(site) + b"/caf\xe9.css"
    with open(raw, "wb") as f:
        f.write(b"x")
    evs = transport(watch(site, tmp_path / "w.db"), None)
    assert "path_b64" in evs[0]
    db = tmp_path / "s.db"
    assert record(db, evs, tmp_path / "r.db").status == 0
    con = sqlite3.connect(db)
    assert con.execute("SELECT input_file FROM synced_files").fetchone() == (raw,)
    assert con.execute("SELECT count(*) FROM synced_files WHERE input_file=?", (raw,)).fetchone() == (1,)


def test_an_old_daemons_database_can_be_used_directly(tmp_path: Path) -> None:
    db = tmp_path / "synced_files.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    con.execute("CREATE UNIQUE INDEX file_unique_per_server ON synced_files (input_file, server)")
    con.execute("INSERT INTO synced_files VALUES ('/old/a.css', 'a.css', 'http://cdn/a.css', 'cdn')")
    con.commit()
    con.close()
    Records(db).close()  # migrates: the four columns and their rows stay
    # (read only: a connection that may write the file and closes last removes the -wal and -shm, SQLite's way)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("SELECT * FROM synced_files").fetchone()[:4] == (
        "/old/a.css",
        "a.css",
        "http://cdn/a.css",
        "cdn",
    )
    con.close()
    # switched to WAL once, for good: stopped, the database stays in WAL mode with its -wal (emptied) and -shm
    # beside it, so that neither a stop nor the next start switches it (a lock readers would meet) and a reader
    # that may not create files next to it (the web server's user) can open it
    wal, shm = tmp_path / "synced_files.db-wal", tmp_path / "synced_files.db-shm"
    assert wal.stat().st_size == 0 and shm.exists()
    assert sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    rec = Records(db)
    assert sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    rec.close()
    assert wal.stat().st_size == 0 and shm.exists()


def test_events_without_a_server_pass_unrecorded(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    evs = watch(site, tmp_path / "w.db")
    res = record(tmp_path / "s.db", evs, tmp_path / "r.db")
    assert res.status == 0 and len(decode(res.stdout)) == 4
    assert "put fc-transport before fc-record" in res.stderr
    assert sqlite3.connect(tmp_path / "s.db").execute("SELECT count(*) FROM synced_files").fetchone() == (0,)


def test_status_counts(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    evs = transport(watch(site, tmp_path / "w.db"), None)
    bad = dict(evs[0], server="ftp", error="timed out", error_kind="transient")
    record(db, [*evs, bad], state)
    res = call(record_cli.main, ["--status", "--json", "--db", str(db), "--state-file", str(state)])
    assert res.status == 0, res.stderr
    import json

    st = json.loads(res.stdout)
    assert st["synced"] == {"cdn": 4} and st["failed"] == {"ftp": 1}
    assert st["scheduled_deletions"] == 0 and st["deleted_at_source"] == 0
    assert st["state_files"][str(state)] == {"queued": 0, "retrying": 0, "outbox": 5, "quarantined": 0}
    text = call(record_cli.main, ["--status", "--db", str(db)]).stdout.decode()
    assert "4 synced file record(s)" in text and "cdn  4 synced" in text and "failed: 1" in text


def test_usage_errors(tmp_path: Path) -> None:
    assert call(record_cli.main, []).status == 2
    assert call(record_cli.main, ["--db", "x.db", "--require-server", "a"]).status == 2
    assert call(record_cli.main, ["--import-queue", "p.db"]).status == 2  # needs --source
    res = call(record_cli.main, ["--status", "--db", str(tmp_path / "none.db")])
    assert res.status == 3 and "no such file" in res.stderr


def test_bad_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    evs = transport(watch(site, tmp_path / "w.db"), None)
    data = b"not json\n" + lines(evs)
    res = call(record_cli.main, ["--db", str(tmp_path / "s.db"), "--state", str(tmp_path / "r.db")], data)
    assert res.status == 1 and "input line 1" in res.stderr
    assert len(decode(res.stdout)) == 4
    assert E.decode(res.stdout.splitlines()[0] + b"\n")["kind"] == "created"


def test_another_user_can_read_the_database_while_no_fc_record_runs(tmp_path: Path) -> None:
    """The Drupal CDN module reads synced_files.db as the web server's user, who may not
    create files in its directory: a WAL database left without its -shm file would be
    unreadable to it ("attempt to write a readonly database")."""
    import pwd
    import tempfile

    runuser = require_tool("runuser", "to read the database as another user")
    if os.geteuid() != 0:
        unavailable("needs root, to read as another user")
    nobody = pwd.getpwnam("nobody")
    # a system Python: ours may live under a directory nobody cannot enter (a venv in /root)
    python = shutil.which("python3", path="/usr/bin:/bin") or unavailable("no /usr/bin/python3 to read as nobody")
    shared = Path(tempfile.mkdtemp(prefix="fc-readable-"))  # pytest's tmp_path is 0700
    try:
        shared.chmod(0o755)  # readable, not writable, by others
        db = shared / "synced_files.db"
        site = make_site(tmp_path)
        evs = watch(site, tmp_path / "w.db")
        assert record(db, transport(evs, None), tmp_path / "r.db").status == 0
        db.chmod(0o644)
        out = subprocess.run(
            [runuser, "-u", nobody.pw_name, "--", python, "-c",
             "import sqlite3, sys; print(sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)"
             ".execute('SELECT count(*) FROM synced_files').fetchone()[0])", str(db)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) > 0
    finally:
        shutil.rmtree(shared)


def test_a_row_read_is_the_row_written(tmp_path: Path) -> None:
    """records.Synced is the one synced_files row type: what fc-record writes is what fc-verify reads back (every
    field, non-UTF-8 names as their bytes); a database with the seed's four columns only reads the rest as None."""
    from fileconveyor.records import Synced, open_reader

    written = Synced(
        b"/site/caf\xe9.css", "caf.css", "http://cdn/caf.css", "cdn", "css/caf.css", 10, 123, 7, 12, "sha256:ab",
        '["x.Y"]', "site", "/site", b"caf\xe9.css", "ev-1",
    )  # fmt: skip
    plain = Synced("/site/b.css", "b.css", "http://cdn/b.css", "cdn")
    rec = Records(tmp_path / "s.db")
    with rec.tx():
        rec.upsert(written)
        rec.upsert(plain)
    rec.close()
    reader = open_reader(str(tmp_path / "s.db"))
    try:
        assert [Synced.read(r) for r in reader.rows()] == [plain, written]
        assert [Synced.read(r) for r in reader.rows(["elsewhere"])] == []
    finally:
        reader.close()
    assert written.path == b"/site/caf\xe9.css" and not written.unprocessed
    seed = sqlite3.connect(tmp_path / "seed.db")
    seed.execute("CREATE TABLE synced_files(input_file text, transported_file_basename text, url text, server text)")
    seed.execute("INSERT INTO synced_files VALUES ('/a.css', 'a.css', 'http://cdn/a.css', 'cdn')")
    seed.commit()
    seed.close()
    reader = open_reader(str(tmp_path / "seed.db"))
    try:
        assert [Synced.read(r) for r in reader.rows()] == [Synced("/a.css", "a.css", "http://cdn/a.css", "cdn")]
    finally:
        reader.close()
