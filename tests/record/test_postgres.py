"""fc-record --db postgresql://...: the same record as SQLite's, in a real PostgreSQL (tests/servers/postgres.py),
read the way its readers read it: the Drupal CDN module's plain SQL, fc-verify, --status."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

try:
    import psycopg
except ImportError:  # the pg_server fixture says so: a failure in CI, a skip elsewhere
    psycopg = None  # type: ignore[assignment]

from fileconveyor import events as E
from fileconveyor.cli import record as record_cli
from fileconveyor.cli import verify as verify_cli
from fileconveyor.records import open_reader
from tests.conftest import call
from tests.record.conftest import BIN, lines, make_site, transport, watch
from tests.servers.postgres import PASSWORD, USER, PgServer
from tests.servers.process import free_port

SYNCED = (
    "input_file, transported_file_basename, url, server, remote, size, mtime_ns, ino, remote_size, hash, processed,"
    " source, root, rel, event_id"
)


def record(db: str, events: list[dict], state: Path, *extra: str):  # type: ignore[no-untyped-def]
    return call(record_cli.main, ["--db", db, "--state", str(state), *extra], lines(events))


def changes(site: Path, w: Path) -> list[dict]:
    """Real fc-watch events over two rounds, sent to two servers, with a failure: creates, a modify, a delete."""
    first = watch(site, w)
    evs = transport(first, None) + transport(first, None, "ftp", "ftp://mirror/")
    (site / "css" / "a.css").write_text("body { color: blue }\n")
    (site / "index.html").unlink()
    second = watch(site, w)
    evs += transport(second, None)
    failed = {**transport(second[:1], None, "ftp", "ftp://mirror/")[0], "error": "530 login", "error_kind": "permanent"}
    return [*evs, failed]


def pg_rows(url: str, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(sql, args).fetchall(), key=repr)


def test_same_rows_as_sqlite_and_the_drupal_query_reads_them(tmp_path: Path, pg_url: str) -> None:
    site = make_site(tmp_path)
    evs = changes(site, tmp_path / "w.db")
    lite = tmp_path / "synced_files.db"
    assert record(str(lite), evs, tmp_path / "r1.db").status == 1  # 1: one event carried an error
    res = record(pg_url, evs, tmp_path / "r2.db")
    assert res.status == 1, res.stderr

    sqlite_db, pg_db = open_reader(str(lite)), open_reader(pg_url)
    try:
        assert list(pg_db.rows()) == list(sqlite_db.rows())
        assert pg_db.count() == sqlite_db.count() == 7  # 4 files on cdn (one deleted, none new), 4 on ftp
        assert pg_db.failed_by_server() == sqlite_db.failed_by_server() == {"ftp": 1}
    finally:
        sqlite_db.close()
        pg_db.close()
    import sqlite3

    con = sqlite3.connect(lite)
    want = sorted(con.execute(f"SELECT {SYNCED} FROM synced_files").fetchall(), key=repr)
    con.close()
    assert pg_rows(pg_url, f"SELECT {SYNCED} FROM synced_files") == want

    # the Drupal CDN module's query, unchanged (its ? is psycopg's %s), on the seed's columns
    a_css = str(site / "css" / "a.css")
    found = pg_rows(pg_url, "SELECT url, server FROM synced_files WHERE input_file = %s", (a_css,))
    assert found == [("ftp://mirror/css/a.css", "ftp"), ("http://cdn.example/css/a.css", "cdn")]
    cols = [r[0] for r in pg_rows(pg_url, "SELECT column_name, ordinal_position FROM information_schema.columns"
                                          " WHERE table_name = 'synced_files' AND ordinal_position <= 4")]  # fmt: skip
    assert sorted(cols) == sorted(["input_file", "transported_file_basename", "url", "server"])


def test_a_name_that_is_not_utf8_is_kept_exactly(tmp_path: Path, pg_url: str) -> None:
    site = make_site(tmp_path)
    raw = os.fsencode(site) + b"/caf\xe9 \xff.css"
    with open(raw, "wb") as f:
        f.write(b"p{}")
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    evs = []
    for ev in watch(site, tmp_path / "w.db"):  # what fc-transport does for a local folder, by the exact names
        rel = E.get_path(ev, "rel")
        dest = os.fsencode(cdn) + b"/" + rel
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(E.get_path(ev, "path"), dest)
        ev = {k: v for k, v in ev.items() if k != "hop"}
        E.put_path(ev, "remote", rel)
        evs.append({**ev, "server": "cdn", "url": cdn.as_uri() + "/" + quote(rel), "transported": "uploaded"})
    res = record(pg_url, evs, tmp_path / "r.db")
    assert res.status == 0, res.stderr
    (text, exact, rel) = pg_rows(
        pg_url, "SELECT input_file, input_file_bytes, rel_bytes FROM synced_files WHERE input_file_bytes = %s", (raw,)
    )[0]
    assert bytes(exact) == raw and bytes(rel) == b"caf\xe9 \xff.css"
    assert text.endswith("/caf\\xe9 \\xff.css")  # a readable form in the text column, never a wrong UTF-8 name
    db = open_reader(pg_url)
    try:
        assert raw in [r[0] for r in db.rows()]  # read back as the bytes, as SQLite gives them
    finally:
        db.close()
    # fc-verify finds it at its destination by its exact name
    out = call(verify_cli.main, ["--db", pg_url, "--to", f"file://{cdn}?name=cdn", "--check", "stat"])
    assert out.status == 0, out.stderr
    assert "5 ok" in out.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_event_never_overwrites_a_newer_one(tmp_path: Path, backend: str, pg_server: PgServer) -> None:
    db = str(tmp_path / "s.db") if backend == "sqlite" else pg_server.url(pg_server.new_database())
    site = make_site(tmp_path)
    a, b = (e for e in transport(watch(site, tmp_path / "w.db"), None) if e["rel"] in ("css/a.css", "css/b.css"))

    def at(ev: dict, order: int, **changes: object) -> dict:
        return {**ev, "order": order, "url": f"{ev['url']}?v={order}", **changes}

    gone = {**a, "kind": "deleted", "transported": "deleted", "order": 3}
    evs = [at(a, 2), at(a, 1), at(b, 5), gone, at(a, 2), at(b, 4), {**at(b, 4), "error": "late", "error_kind": "x"}]
    res = record(db, evs, tmp_path / "r.db")
    assert res.status == 0, res.stderr  # the late failure is older than the success recorded: not a failure now
    assert [json.loads(x).get("order") for x in res.stdout.splitlines()] == [2, 1, 5, 3, 2, 4, 4]  # all passed on
    reader = open_reader(db)
    try:
        assert [(r[0], r[2]) for r in reader.rows()] == [(b["path"], b["url"] + "?v=5")]
        assert reader.failed_by_server() == {}
    finally:
        reader.close()
    # the same order again (a replay) is applied: at least once delivery stays idempotent, not refused
    assert record(db, [at(b, 5, url="http://cdn.example/again")], tmp_path / "r.db").status == 0
    reader = open_reader(db)
    try:
        assert [r[2] for r in reader.rows()] == ["http://cdn.example/again"]
    finally:
        reader.close()


def deadlocks(url: str) -> int:
    """Deadlocks PostgreSQL broke in the URL's database, once every other session of it has ended (a session's
    counts reach the statistics when it ends)."""
    with psycopg.connect(url, autocommit=True) as conn:
        others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        deadline = time.monotonic() + 30
        while conn.execute(others).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_two_fc_record_processes_write_one_database(tmp_path: Path, pg_url: str) -> None:
    """Two hosts' fc-record at once, each with part of every path's events in any order: the newest wins.  And
    without deadlocks: each writer locked rows in its events' order, so PostgreSQL broke a round every second or
    so, each done again after a back-off (20 to 50 s for these 1,200 events, instead of about 2)."""
    rng = random.Random(19)
    per = {0: [], 1: []}  # type: dict[int, list[dict]]
    final = {}
    for i in range(300):
        path = f"/srv/www/d{i % 7}/f{i}.css"
        for order in range(1, 5):
            kind = "deleted" if order == 4 and i % 5 == 0 else ("created" if order == 1 else "modified")
            ev = {"v": 1, "kind": kind, "path": path, "server": "cdn", "order": order, "size": order,
                  "url": f"https://cdn.example/f{i}.css?v={order}", "transported": "uploaded"}  # fmt: skip
            if kind == "deleted":
                ev["transported"] = "deleted"
            per[rng.randrange(2)].append(ev)
        final[path] = None if i % 5 == 0 else f"https://cdn.example/f{i}.css?v=4"
    for evs in per.values():
        rng.shuffle(evs)
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(BIN / "fc-record"), "--db", pg_url, "--state", str(tmp_path / f"r{k}.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for k in per
    ]
    for proc, k in zip(procs, per, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(lines(per[k]))
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    got = dict(pg_rows(pg_url, "SELECT input_file, url FROM synced_files"))
    assert got == {p: u for p, u in final.items() if u is not None}
    assert pg_rows(pg_url, "SELECT count(*), min(event_order) FROM record_order") == [(300, 4)]
    assert deadlocks(pg_url) == 0


def test_a_password_is_never_printed(tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    wrong = pg_server.url(name, password="s3cr3t-Wrong")
    res = call(record_cli.main, ["--db", wrong, "--state", str(tmp_path / "r.db")], b"")
    assert res.status == 3, res.stderr
    assert "s3cr3t" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "login refused" in res.stderr and f"postgresql://{USER}@127.0.0.1:{pg_server.port}/{name}" in res.stderr
    for argv in (["--status", "--db", pg_url, "--json"], ["--status", "--db", pg_url]):
        res = call(record_cli.main, argv)
        assert res.status == 0, res.stderr
        assert PASSWORD not in res.stdout.decode() + res.stderr and "pg%40ss" not in res.stdout.decode()
    st = json.loads(call(record_cli.main, ["--status", "--db", pg_url, "--json"]).stdout)
    assert st["db"] == f"postgresql://{USER}@127.0.0.1:{pg_server.port}/{name}"
    assert st["synced"] == {}  # no fc-record has made the tables yet: nothing synced, not an error
    out = call(verify_cli.main, ["--db", wrong])
    assert out.status == 3 and "s3cr3t" not in out.stderr


def test_the_password_from_pgpassfile(tmp_path: Path, pg_server: PgServer, pg_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    name = pg_url.rsplit("/", 1)[1]
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:{name}:{USER}:{PASSWORD.replace(':', chr(92) + ':')}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    site = make_site(tmp_path)
    evs = transport(watch(site, tmp_path / "w.db"), None)
    res = record(pg_server.url(name, password=None), evs, tmp_path / "r.db")
    assert res.status == 0, res.stderr
    assert pg_rows(pg_url, "SELECT count(*) FROM synced_files") == [(4,)]


def test_a_password_not_percent_encoded_is_refused_unshown(tmp_path: Path, pg_server: PgServer) -> None:
    raw = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{pg_server.port}/postgres"  # '@' and '/' as they are
    res = call(record_cli.main, ["--db", raw, "--state", str(tmp_path / "r.db")], b"")
    assert res.status == 3 and "percent-encode" in res.stderr
    assert not any(piece in res.stderr for piece in (PASSWORD, "pg@", "@ss", "ss:w", "w/rd", "127.0.0.1"))


def test_a_server_down_is_try_again_later(tmp_path: Path) -> None:
    down = f"postgresql://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/nothing"
    res = call(record_cli.main, ["--db", down, "--state", str(tmp_path / "r.db")], b"")
    assert res.status == 4, res.stderr
    assert "Connection refused" in res.stderr and quote(PASSWORD, safe="") not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert call(verify_cli.main, ["--db", down]).status == 4
    assert call(record_cli.main, ["--status", "--db", down]).status == 4


def test_the_pipeline_into_postgresql_then_fc_verify(tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    """As a worker host runs it: the password in PGPASSFILE, the URL in every command, fc-verify reads it."""
    from tests.record.test_pipeline import SITE, files_of, sh

    name = pg_url.rsplit("/", 1)[1]
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:*:{USER}:{PASSWORD.replace(':', chr(92) + ':')}\n")
    passfile.chmod(0o600)
    url = pg_server.url(name, password=None)
    cdn = tmp_path / "cdn"
    env = f"export PGPASSFILE={passfile}; "
    sh(
        env + f"fc-watch --scan-once {SITE} | fc-transport --to file://{cdn} --url https://cdn.example/"
        f" --record-db {url} | fc-record --db {url}",
        tmp_path,
    )
    assert files_of(cdn) == files_of(SITE)
    rows = pg_rows(pg_url, "SELECT input_file, url, server FROM synced_files")
    assert sorted(r[0] for r in rows) == sorted(str(SITE / rel) for rel in files_of(SITE))
    out = sh(env + f"fc-verify --db {url} --to file://{cdn}?name=file --check stat", tmp_path)
    assert f"{len(rows)} ok" in out.stderr
    (cdn / "misc" / "drupal.js").unlink()
    out = sh(env + f"fc-verify --db {url} --to file://{cdn}?name=file --check stat", tmp_path, check=False)
    assert out.returncode == 1 and '"problem":"missing"' in out.stdout
    status = sh(env + f"fc-record --status --db {url}", tmp_path).stdout
    assert f"{len(rows)} synced file record(s)" in status and "  file  " in status


def test_source_deletion_after_sync_with_the_shared_record(tmp_path: Path, pg_url: str) -> None:
    """--delete-source-after keeps its schedule in PostgreSQL; fc-transport's --record-db test reads it there."""
    from fileconveyor.records import deleted_by_record

    site = make_site(tmp_path)
    wstate = tmp_path / "w.db"
    by = {e["rel"]: e for e in watch(site, wstate)}
    a, b = by["css/a.css"], by["css/b.css"]
    stream = transport([a], None, "cdn") + transport([a], None, "ftp") + transport([b], None, "cdn")
    res = record(pg_url, stream, tmp_path / "r.db", "--source", f"site={site}", "--delete-source-after", "0.2",
                 "--require-server", "cdn", "--require-server", "ftp", "--drain-timeout", "10")  # fmt: skip
    assert res.status == 0, res.stderr
    assert not (site / "css" / "a.css").exists()
    assert (site / "css" / "b.css").exists(), "synced to cdn only: must stay"
    ((servers, deleted, eid),) = pg_rows(
        pg_url, "SELECT servers, deleted_at IS NOT NULL, event_id FROM source_deletions"
    )
    assert (servers, deleted) == ('["cdn", "ftp"]', True)
    gone = watch(site, wstate)
    assert [(e["kind"], e["rel"], e["id"]) for e in gone] == [("deleted", "css/a.css", eid)]
    reader = open_reader(pg_url)
    try:
        assert deleted_by_record(reader, gone[0])
        assert reader.deletions() == (0, 1)
    finally:
        reader.close()
    # the deletion, kept on the servers by fc-transport, keeps the rows
    kept = [dict(e, transported="kept") for e in transport(gone, None, "cdn") + transport(gone, None, "ftp")]
    assert (
        record(pg_url, kept, tmp_path / "r.db", "--source", f"site={site}", "--delete-source-after", "0.2").status == 0
    )
    assert len(pg_rows(pg_url, "SELECT 1 FROM synced_files WHERE input_file = %s", (a["path"],))) == 2


def test_a_connection_lost_mid_round_loses_the_round_whole_then_reconnects(tmp_path: Path, pg_url: str) -> None:
    from fileconveyor.errors import RetryableError
    from fileconveyor.records import Synced, open_writer

    rec = open_writer(pg_url)
    try:
        with rec.item():
            rec.upsert(Synced("/srv/a", "a", "https://cdn/a", "cdn"))
        rec.commit()
        with rec.item():
            rec.upsert(Synced("/srv/b", "b", "https://cdn/b", "cdn"))  # in the round's open transaction
        with psycopg.connect(pg_url, autocommit=True) as admin:  # what a server restart does to the connection
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'fileconveyor'"
            )
        with pytest.raises(RetryableError), rec.item():
            rec.upsert(Synced("/srv/c", "c", "https://cdn/c", "cdn"))
        with pytest.raises(RetryableError, match="nothing of this round recorded"):
            rec.commit()
        assert pg_rows(pg_url, "SELECT input_file FROM synced_files") == [("/srv/a",)]  # b went with the round
        for name in ("b", "c"):  # the round again, on a new connection
            with rec.item():
                rec.upsert(Synced(f"/srv/{name}", name, f"https://cdn/{name}", "cdn"))
        rec.commit()
    finally:
        rec.close()
    assert pg_rows(pg_url, "SELECT input_file FROM synced_files") == [("/srv/a",), ("/srv/b",), ("/srv/c",)]


def test_import_a_sqlite_record_into_postgresql(tmp_path: Path, pg_url: str) -> None:
    site = make_site(tmp_path)
    lite = tmp_path / "synced_files.db"
    assert record(str(lite), transport(watch(site, tmp_path / "w.db"), None), tmp_path / "r.db").status == 0
    res = call(record_cli.main, ["--db", pg_url, "--import-db", str(lite), "--source", f"site={site}"])
    assert res.status == 0, res.stderr
    assert "imported 4 row(s) (cdn 4)" in res.stderr and "pg@ss" not in res.stderr
    got = pg_rows(pg_url, "SELECT input_file, transported_file_basename, url, server, source, rel FROM synced_files")
    assert (str(site / "css" / "a.css"), "a.css", "http://cdn.example/css/a.css", "cdn", "site", "css/a.css") in got
    assert len(got) == 4


def test_the_css_url_updater_reads_the_shared_record(tmp_path: Path, pg_url: str) -> None:
    """fc-process's link_updater (--record-db URL): the same stylesheet as with SQLite; the server down waits."""
    from fileconveyor.processors import RetryLater
    from fileconveyor.processors.link_updater import CSSURLUpdater
    from fileconveyor.records import Synced, open_writer
    from tests.processors.conftest import read, step
    from tests.processors.test_link_updater import ASSETS, FIXTURES, SITE, cdn, options

    opts = {**options(tmp_path / "unused.db"), "synced_db": pg_url}
    with pytest.raises(RetryLater):  # fc-record has not made its tables yet: nothing is synced
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w0", options=opts)
    rec = open_writer(pg_url)
    try:
        for rel, url, server in [cdn(a) for a in ASSETS] + [cdn(a, "other") for a in ASSETS]:
            with rec.item():
                rec.upsert(Synced(str(SITE / rel), os.path.basename(rel), url, server))
        rec.commit()
    finally:
        rec.close()
    out, _ = step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w", options=opts)
    assert read(out.path).decode() == (FIXTURES / "style.expected.css").read_text()
    # one login per worker thread, not one per stylesheet (each is an authentication and a server process)
    sessions = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    before = pg_rows(pg_url, sessions)[0][0]
    for k in range(3):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / f"again{k}", options=opts)
    assert pg_rows(pg_url, sessions)[0][0] - before == 1  # pg_rows' own login: the stylesheets made none
    down = {**opts, "synced_db": f"postgresql://{USER}@127.0.0.1:{free_port()}/x"}
    with pytest.raises(RetryLater, match="Connection refused"):
        step(CSSURLUpdater(), SITE / "css" / "style.css", tmp_path / "w2", options=down)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://fc:s3cret@db.example:5432/cdn", "postgresql://fc@db.example:5432/cdn"),
        ("postgres://fc:s%40cret@db/cdn?sslmode=require", "postgres://fc@db/cdn?sslmode=require"),
        ("postgresql://db/cdn?user=fc&password=s3cret&sslmode=require", "postgresql://db/cdn?user=fc&sslmode=require"),
        ("postgresql://fc:s@cret@db/cdn", "postgresql://(a URL with more than one '@', not shown)"),
        ("postgresql:///cdn?host=/run/postgresql&password=x#f", "postgresql:///cdn?host=/run/postgresql#f"),
        ("postgresql://[::1]:5433/cdn?passwor%64=x", "postgresql://[::1]:5433/cdn"),
    ],
)
def test_what_messages_show_of_a_url(url: str, shown: str) -> None:
    from fileconveyor.records import shown as show

    assert show(url) == shown


def test_postgresql_killed_and_restarted_under_a_running_fc_record(tmp_path: Path, pg_server: PgServer) -> None:
    """kill -9 of the database server mid-stream: fc-record retries, loses nothing, and records every event once
    the server is back (the rounds that failed are done again: records are upserts)."""
    import time

    from fileconveyor.records import open_writer
    from tests.servers.postgres import _ready

    url = pg_server.url(pg_server.new_database())
    open_writer(url).close()  # the tables, so the test can count rows from the start
    events = [
        {
            "v": 1,
            "kind": "created",
            "path": f"/srv/www/f{i}.css",
            "server": "cdn",
            "url": f"https://cdn/f{i}.css",
            "transported": "uploaded",
        }
        for i in range(600)
    ]
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    log = open(tmp_path / "fc-record.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(BIN / "fc-record"), "--db", url, "--state", str(tmp_path / "r.db"), "-v"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, env=env,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.stdin.write(lines(events[:300]))
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while pg_rows(url, "SELECT count(*) FROM synced_files") != [(300,)]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        pg_server.process.kill()  # kill -9, the server and its children
        proc.stdin.write(lines(events[300:]))
        proc.stdin.flush()
        time.sleep(1.5)  # rounds fail meanwhile: connection refused
        assert proc.poll() is None, "fc-record must wait for the server, not exit"
    finally:
        if not pg_server.process.running:
            pg_server.process.start(timeout=30)
            _ready(pg_server)
    proc.stdin.close()
    status = proc.wait(90)
    log.close()
    err = (tmp_path / "fc-record.log").read_text()
    assert status == 0, err
    assert "server closed the connection unexpectedly" in err and "retry in" in err  # it did meet the outage
    assert pg_rows(url, "SELECT count(*), count(DISTINCT input_file) FROM synced_files") == [(600, 600)], err


def test_a_busy_state_file_names_its_holder_without_the_password(tmp_path: Path, pg_url: str) -> None:
    """The second copy of a stage names the first one's command line (from /proc): never the password in it."""
    import time

    from fileconveyor.state import lock_holder

    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    state = tmp_path / "r.db"
    argv = [sys.executable, str(BIN / "fc-record"), f"--db={pg_url}", "--state", str(state)]
    first = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while lock_holder(state) != first.pid:  # it holds its state file now
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run(argv, input=b"", capture_output=True, env=env, timeout=60)
        err = second.stderr.decode()
        assert second.returncode == 4 and "in use by another process" in err, err
        assert "fc-record --db=postgresql://fc@127.0.0.1" in err
        assert PASSWORD not in err and quote(PASSWORD, safe="") not in err
    finally:
        assert first.stdin is not None
        first.stdin.close()
        first.wait(60)


def test_fc_transport_uploads_while_the_record_server_is_down(tmp_path: Path) -> None:
    """--record-db postgresql:// with the database server down: a server down costs a retry, not the uploads (they
    need no record). A deletion asks the record whether fc-record deleted the source itself after syncing it: it
    waits for the server (the copy stays), alone, and stays queued (exit 4: retry). Before, fc-transport stopped
    at its start (exit 4, nothing uploaded), and a deletion met while running paused every upload to the
    destination, which was not down."""
    site = make_site(tmp_path)
    events = watch(site, tmp_path / "w.db")
    (site / "index.html").unlink()
    gone = next(e for e in events if e["rel"] == "index.html")
    drop = ("size", "mtime", "mtime_ns", "ino", "hop", "id")
    deleted = {**{k: v for k, v in gone.items() if k not in drop}, "kind": "deleted", "id": "f" * 32}
    first = [e for e in events if e is not gone]
    cdn = tmp_path / "cdn"
    down = f"postgresql://{USER}@127.0.0.1:{free_port()}/x"
    args = ["--to", f"file://{cdn}", "--record-db", down, "--state", str(tmp_path / "t.db"), "--drain-timeout", "3"]
    # the deletion first: what comes after it (for other paths) does not wait for it
    res = subprocess.run(
        [sys.executable, str(BIN / "fc-transport"), *args],
        input=lines([deleted, *first]),
        capture_output=True,
        timeout=120,
    )
    stderr = res.stderr.decode()
    assert "uploads go on, and deletions wait until it answers" in stderr, stderr
    (cdn / "index.html").write_text("the copy an earlier run uploaded\n")  # (after: a deletion that went wrong
    # would have found nothing; the next run below must not delete it either)
    want = sorted(e["rel"] for e in first)
    assert (
        sorted(p.relative_to(cdn).as_posix() for p in cdn.rglob("*") if p.is_file() and p.name != "index.html") == want
    )
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert sorted(e["rel"] for e in out if e.get("transported") == "uploaded") == want
    assert not [e for e in out if e["kind"] == "deleted"], out  # neither done nor failed: still queued
    assert res.returncode == 4, (res.returncode, stderr)  # Exit.RETRY: run it again
    again = subprocess.run(
        [sys.executable, str(BIN / "fc-transport"), *args], input=b"", capture_output=True, timeout=120
    )
    assert again.returncode == 4 and (cdn / "index.html").exists(), again.stderr.decode()
