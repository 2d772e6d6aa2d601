"""--delete-source-after: only this pipeline's files, only once synced everywhere, never a newer version, never
propagated, and a schedule that survives kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.records import deleted_by_record, open_readonly
from tests.record.conftest import BIN, decode, lines, make_site, record, transport, watch


def both(evs: list[dict]) -> list[dict]:
    return transport(evs, None, "cdn") + transport(evs, None, "ftp")


def rows(db: Path, sql: str, *args: object) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def wait_for(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_only_files_synced_everywhere_through_this_pipeline_are_deleted(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state, wstate = tmp_path / "s.db", tmp_path / "r.db", tmp_path / "w.db"
    evs = watch(site, wstate)
    by = {e["rel"]: e for e in evs}
    a, b, idx = by["css/a.css"], by["css/b.css"], by["index.html"]
    # this pipeline's rule is *.css: logo.png never reaches fc-record; index.html comes without a server
    stream = both([a]) + transport([b], None, "cdn")
    stream += [dict(transport([b], None, "ftp")[0], error="550 permission denied"), idx]
    res = record(db, stream, state, "--source", f"site={site}", "--delete-source-after", "0.2",
                 "--require-server", "cdn", "--require-server", "ftp", "--drain-timeout", "10")  # fmt: skip
    assert res.status == 1, res.stderr  # b's failure
    assert not (site / "css" / "a.css").exists()
    assert (site / "css" / "b.css").exists(), "synced to cdn only: must stay"
    assert (site / "img" / "logo.png").exists() and (site / "index.html").exists()
    (row,) = rows(db, "SELECT input_file, servers, deleted_at IS NOT NULL, event_id FROM source_deletions")
    assert row[:3] == (a["path"], '["cdn", "ftp"]', 1)

    # fc-watch reports the deletion with exactly the id recorded: that is how fc-transport knows it
    gone = watch(site, wstate)
    assert [(e["kind"], e["rel"]) for e in gone] == [("deleted", "css/a.css")]
    assert gone[0]["id"] == row[3]
    con = open_readonly(db)
    assert deleted_by_record(con, gone[0])
    # the user's own deletion of another file is not ours: it is propagated
    (site / "css" / "b.css").unlink()
    user = watch(site, wstate)
    assert not deleted_by_record(con, user[0])
    con.close()

    # fc-transport with --record-db keeps the remote copy ("kept"): fc-record keeps the rows
    kept = [dict(e, transported="kept") for e in both(gone)]
    deleted = transport(user, None, "cdn")
    assert record(db, kept + deleted, state).status == 0
    assert rows(db, "SELECT server FROM synced_files WHERE input_file=? ORDER BY 1", a["path"]) == [("cdn",), ("ftp",)]
    assert rows(db, "SELECT server FROM synced_files WHERE input_file=?", b["path"]) == []


def test_an_empty_server_is_no_server_a_deletion_waits_for(tmp_path: Path) -> None:
    """A line whose ``server`` is "" (a failure before any destination was chosen, or a forged line) named no
    server; it was kept as one seen, so without --require-server no source was ever deleted again."""
    site = make_site(tmp_path)
    db, state, wstate = tmp_path / "s.db", tmp_path / "r.db", tmp_path / "w.db"
    by = {e["rel"]: e for e in watch(site, wstate)}
    a, b = by["css/a.css"], by["css/b.css"]
    stream = [dict(transport([b], None, "cdn")[0], server="", error="no destination"), *transport([a], None, "cdn")]
    res = record(db, stream, state, "--source", f"site={site}", "--delete-source-after", "0.2",
                 "--drain-timeout", "10")  # fmt: skip
    assert res.status == 1, res.stderr  # b's failure
    assert rows(state, "SELECT server FROM servers_seen") == [("cdn",)]
    assert not (site / "css" / "a.css").exists(), "synced to every server seen (cdn): deleted"
    assert (site / "css" / "b.css").exists()


def test_our_deletion_seen_without_fc_transport_keeps_the_row(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state, wstate = tmp_path / "s.db", tmp_path / "r.db", tmp_path / "w.db"
    a = [e for e in watch(site, wstate) if e["rel"] == "css/a.css"]
    record(
        db, transport(a, None), state, "--source", f"site={site}", "--delete-source-after", "0", "--drain-timeout", "10"
    )
    assert not (site / "css" / "a.css").exists()
    gone = watch(site, wstate)
    plain = [dict(gone[0], server="cdn")]  # reached fc-record with no transport in between
    assert record(db, plain, state).status == 0
    assert rows(db, "SELECT count(*) FROM synced_files WHERE input_file=?", a[0]["path"]) == [(1,)]
    # but when an fc-transport without --record-db did delete the remote copy, the row goes, with a warning
    res = record(db, transport(gone, None), state)
    assert "--record-db" in res.stderr
    assert rows(db, "SELECT count(*) FROM synced_files WHERE input_file=?", a[0]["path"]) == [(0,)]


def test_without_require_server_every_server_seen_counts(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    evs = watch(site, tmp_path / "w.db")
    a, b = (next(e for e in evs if e["rel"] == r) for r in ("css/a.css", "css/b.css"))
    # ftp is seen (a's failure there): b, synced to cdn only, is not deleted; a is not either
    stream = [*transport([a, b], None, "cdn"), dict(transport([a], None, "ftp")[0], error="timed out")]
    res = record(db, stream, state, "--source", f"site={site}", "--delete-source-after", "0", "--drain-timeout", "5")
    assert "--require-server" in res.stderr
    assert (site / "css" / "a.css").exists() and (site / "css" / "b.css").exists()
    record(
        db,
        transport([a], None, "ftp"),
        state,
        "--source",
        f"site={site}",
        "--delete-source-after",
        "0",
        "--drain-timeout",
        "5",
    )
    assert not (site / "css" / "a.css").exists() and (site / "css" / "b.css").exists()


def _start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(BIN / "fc-record"),
            "--db",
            str(tmp_path / "s.db"),
            "--state",
            str(tmp_path / "r.db"),
            "--require-server",
            "cdn",
            "--source",
            f"site={tmp_path / 'site'}",
            *extra,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _send(proc: subprocess.Popen, evs: list[dict]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(lines(evs))
    proc.stdin.flush()


def test_a_file_modified_after_scheduling_waits_for_its_new_version(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, wstate = tmp_path / "s.db", tmp_path / "w.db"
    a_css = site / "css" / "a.css"
    a = [e for e in watch(site, wstate) if e["rel"] == "css/a.css"]
    proc = _start(tmp_path, "--delete-source-after", "3", "--drain-timeout", "10")
    try:
        _send(proc, transport(a, None))
        wait_for(lambda: db.exists() and rows(db, "SELECT count(*) FROM source_deletions") == [(1,)])
        a_css.write_text("a new version, not synced yet\n")
        assert rows(db, "SELECT deleted_at FROM source_deletions") == [(None,)], "the machine is too slow for this test"
        ((due,),) = rows(db, "SELECT due_at FROM source_deletions")
        # past the due time, the deleter has decided: the row dropped (refused) or marked deleted
        wait_for(
            lambda: (
                time.time() > due
                and rows(db, "SELECT count(*) FROM source_deletions WHERE deleted_at IS NULL") == [(0,)]
            )
        )
        assert a_css.exists(), "a version that was never synced was deleted"
        assert rows(db, "SELECT count(*) FROM source_deletions") == [(0,)]
        # the new version is synced: now it goes, after the delay
        v2 = watch(site, wstate)
        assert [e["kind"] for e in v2] == ["modified"]
        _send(proc, transport(v2, None))
        wait_for(lambda: not a_css.exists())
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (row,) = rows(db, "SELECT size, deleted_at IS NOT NULL FROM source_deletions")
    assert row == (len("a new version, not synced yet\n"), 1)


def test_the_schedule_survives_kill_9(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db = tmp_path / "s.db"
    evs = [e for e in watch(site, tmp_path / "w.db") if e["rel"] in ("css/a.css", "css/b.css")]
    proc = _start(tmp_path, "--delete-source-after", "3")
    try:
        _send(proc, transport(evs, None))
        wait_for(lambda: db.exists() and rows(db, "SELECT count(*) FROM source_deletions") == [(2,)])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (site / "css" / "a.css").exists() and (site / "css" / "b.css").exists()
    # killed between the commit of deleted_at and the unlink: simulated on b, finished on restart
    con = sqlite3.connect(db)
    con.execute("UPDATE source_deletions SET deleted_at=1 WHERE input_file=?", (str(site / "css" / "b.css"),))
    con.commit()
    con.close()
    # restarted with no input at all: it carries out what falls due while it drains, then exits
    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            str(BIN / "fc-record"),
            "--db",
            str(db),
            "--state",
            str(tmp_path / "r.db"),
            "--source",
            f"site={site}",
            "--delete-source-after",
            "2",
            "--require-server",
            "cdn",
            "--drain-timeout",
            "10",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert not (site / "css" / "a.css").exists() and not (site / "css" / "b.css").exists()
    assert time.monotonic() - t0 < 9
    assert rows(db, "SELECT count(*) FROM source_deletions WHERE deleted_at IS NOT NULL") == [(2,)]
    assert decode(out.stdout) == []


def test_a_deletion_due_later_than_the_drain_stays_scheduled(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    a = [e for e in watch(site, tmp_path / "w.db") if e["rel"] == "css/a.css"]
    res = record(
        db,
        transport(a, None),
        state,
        "--source",
        f"site={site}",
        "--delete-source-after",
        "3600",
        "--drain-timeout",
        "0",
    )
    assert res.status == 0
    assert "1 source deletion(s) still scheduled" in res.stderr
    assert (site / "css" / "a.css").exists()
    (due,) = rows(db, "SELECT due_at - scheduled_at FROM source_deletions WHERE deleted_at IS NULL")
    assert abs(due[0] - 3600) < 1
    from fileconveyor.cli import record as record_cli
    from tests.conftest import call

    st = call(record_cli.main, ["--status", "--db", str(db)]).stdout.decode()
    assert "scheduled for deletion at the source: 1" in st
    assert os.path.exists(site / "css" / "a.css")
    assert E.get_path(a[0], "path") == os.fsencode(site / "css" / "a.css")


def test_the_users_deletion_before_ours_unschedules_and_propagates(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db, state, wstate = tmp_path / "s.db", tmp_path / "r.db", tmp_path / "w.db"
    a = [e for e in watch(site, wstate) if e["rel"] == "css/a.css"]
    args = ("--source", f"site={site}", "--delete-source-after", "3600", "--drain-timeout", "0")
    assert record(db, transport(a, None), state, *args).status == 0
    assert rows(db, "SELECT count(*) FROM source_deletions WHERE deleted_at IS NULL") == [(1,)]
    (site / "css" / "a.css").unlink()  # the user was quicker
    gone = watch(site, wstate)
    con = open_readonly(db)
    assert not deleted_by_record(con, gone[0])  # so fc-transport deletes the remote copy
    con.close()
    res = record(db, transport(gone, None), state, *args)
    assert res.status == 0 and "still scheduled" not in res.stderr
    assert rows(db, "SELECT count(*) FROM source_deletions") == [(0,)]
    assert rows(db, "SELECT count(*) FROM synced_files") == [(0,)]
