"""Remote names: deletions, a rename by unique_filename (old name deleted, now or later), and "kept" files."""

from __future__ import annotations

import time
from pathlib import Path

from fileconveyor.records import Deletion, Records
from tests.conftest import work_dir_for

from .conftest import event, jsonl, lines, transport, tree


def _versions(tmp_path: Path) -> tuple[Path, Path]:
    # fc-process's work folder in the state directory (FC_STATE_DIR, see env): fc-transport sends "file" only
    # from such a folder
    src = tmp_path / "src"
    work = work_dir_for(tmp_path / "state" / "process.db.work", src / "css" / "a.css", "css/a.css")
    (src / "css").mkdir(parents=True)
    (src / "css" / "a.css").write_text("source")
    for n in (1, 2, 3):
        (work / f"v{n}.css").write_text(f"version {n}")
    return src, work


def _version(src: Path, work: Path, n: int, kind: str = "modified") -> dict:
    # what fc-process emits for unique_filename.MD5: a new name for each content
    return event(src, "css/a.css", kind, name=f"a_{n}.css", file=str(work / f"v{n}.css"))


def test_deleted_removes_the_name_last_uploaded(tmp_path: Path, env: dict[str, str]) -> None:
    src, work = _versions(tmp_path)
    args = ["--to", f"file://{tmp_path}/cdn", "--state", str(tmp_path / "t.db")]
    first = transport(args, env, jsonl([_version(src, work, 1, "created")]))
    assert first.returncode == 0, first.stderr.decode()
    assert tree(tmp_path / "cdn") == {"css/a_1.css": b"version 1"}
    # the deleted event carries no name: fc-transport's state knows it (and the file is gone at the source: a
    # deletion of one still there deletes nothing, tests/security/test_forged_deletions.py)
    (src / "css" / "a.css").unlink()
    gone = transport(args, env, jsonl([event(src, "css/a.css", "deleted"), event(src, "css/never.css", "deleted")]))
    assert gone.returncode == 0, gone.stderr.decode()
    assert tree(tmp_path / "cdn") == {}
    outs = lines(gone.stdout)
    # never.css was never uploaded: nothing is deleted for it (tests/security/test_unknown_deletions.py)
    assert [(ev["remote"], ev["transported"]) for ev in outs] == [("css/a_1.css", "deleted")]
    assert b"never.css: not deleted from " in gone.stderr


def test_new_name_replaces_the_old_one_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    src, work = _versions(tmp_path)
    evs = [_version(src, work, 1, "created"), _version(src, work, 2)]
    result = transport(["--to", f"file://{tmp_path}/cdn"], env, jsonl(evs))
    assert result.returncode == 0, result.stderr.decode()
    assert tree(tmp_path / "cdn") == {"css/a_2.css": b"version 2"}


def test_old_name_deleted_after_the_delay(tmp_path: Path, env: dict[str, str]) -> None:
    src, work = _versions(tmp_path)
    cdn = tmp_path / "cdn"
    # 4 s, not less: the quick run below must end before the deletion is due, even on a loaded 2-core machine
    # where starting a stage and one upload took over 1.5 s (the test failed about 1 run in 4 there)
    args = ["--to", f"file://{cdn}", "--state", str(tmp_path / "t.db"), "--delete-old-after", "4"]
    assert transport(args, env, jsonl([_version(src, work, 1, "created")])).returncode == 0
    started = time.monotonic()
    # --drain-timeout 0: exit without waiting, with "try again later" (4) since work is left; the pending
    # deletion must survive in the state file
    quick = transport([*args, "--drain-timeout", "0"], env, jsonl([_version(src, work, 2)]))
    assert quick.returncode == 4, quick.stderr.decode()
    assert b"1 superseded remote file(s) to delete (--delete-old-after) not done within the drain time" in quick.stderr
    assert [ev["transported"] for ev in lines(quick.stdout)] == ["uploaded"]  # no deletion yet, no event
    if time.monotonic() - started < 4:
        assert tree(cdn) == {"css/a_1.css": b"version 1", "css/a_2.css": b"version 2"}  # old URL still works
    # the next run (nothing new to read) deletes it once due, waiting within its drain timeout
    later = transport(args, env, b"")
    assert later.returncode == 0, later.stderr.decode()
    assert time.monotonic() - started >= 4
    assert tree(cdn) == {"css/a_2.css": b"version 2"}
    # the deletion of the old name is reported; the quick run's "uploaded" line comes again when that run ended
    # before this test read it from the pipe (under load: fc-transport saw it unread, so not delivered)
    out = lines(later.stdout)
    (ev,) = [e for e in out if e["transported"] != "uploaded"]
    assert all(e["remote"] == "css/a_2.css" for e in out if e["transported"] == "uploaded"), out
    assert (ev["kind"], ev["transported"], ev["superseded"]) == ("modified", "deleted", True)
    assert (ev["remote"], ev["rel"], ev["path"]) == ("css/a_1.css", "css/a.css", str(src / "css/a.css"))
    assert ev["url"].endswith("/css/a_1.css") and ev["server"] == "file"


def test_old_name_in_use_again_is_not_deleted(tmp_path: Path, env: dict[str, str]) -> None:
    # v1 -> v2 -> v1 again: the pending deletion of a_1.css must not remove the live file
    src, work = _versions(tmp_path)
    evs = [_version(src, work, 1, "created"), _version(src, work, 2), _version(src, work, 1)]
    result = transport(["--to", f"file://{tmp_path}/cdn", "--delete-old-after", "0.5"], env, jsonl(evs))
    assert result.returncode == 0, result.stderr.decode()
    assert tree(tmp_path / "cdn") == {"css/a_1.css": b"version 1"}


def test_deletion_made_by_fc_record_is_kept(tmp_path: Path, env: dict[str, str]) -> None:
    src, _ = _versions(tmp_path)
    cdn, record = tmp_path / "cdn", tmp_path / "record.db"
    args = ["--to", f"file://{cdn}?name=cdn", "--state", str(tmp_path / "t.db"), "--record-db", str(record)]
    (src / "css" / "b.css").write_text("b")
    evs = [event(src, "css/a.css", "created"), event(src, "css/b.css", "created")]
    assert transport(args, env, jsonl(evs)).returncode == 0
    # fc-record deleted a.css after sync and noted the id of the deleted event fc-watch reports for it
    records = Records(record)
    with records.tx():
        now = time.time()
        path = str(src / "css/a.css")
        records.put_deletion(
            Deletion(path, ["cdn"], (6, 1, 1), "site", str(src), "css/a.css", now, now, now, "e-record", "t")
        )
    records.close()
    for name in ("a.css", "b.css"):  # gone at the source, as a deletion says (one still there deletes nothing)
        (src / "css" / name).unlink()
    evs = [
        event(src, "css/a.css", "deleted", id="e-record"),  # fc-record's deletion: kept on the server
        event(src, "css/b.css", "deleted", id="e-user"),  # the user's: propagated
    ]
    result = transport(args, env, jsonl(evs))
    assert result.returncode == 0, result.stderr.decode()
    outs = sorted((ev["rel"], ev["transported"]) for ev in lines(result.stdout))
    assert outs == [("css/a.css", "kept"), ("css/b.css", "deleted")]
    assert tree(cdn) == {"css/a.css": b"source"}


def test_an_event_that_failed_upstream_passes_once_and_is_not_sent(tmp_path: Path) -> None:
    from fileconveyor import events as E
    from fileconveyor.cli.transport import main
    from tests.conftest import call

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"not really a png")
    ev = {"v": 1, "id": "x", "kind": "created", "source": "s", "root": str(src), "size": 16}
    E.put_path(ev, "path", str(src / "a.png").encode())
    E.put_path(ev, "rel", b"a.png")
    ev["error"] = "image_optimizer.Max: not a PNG"
    ev["error_kind"] = "source"
    dests = [tmp_path / "d1", tmp_path / "d2"]
    argv = [a for d in dests for a in ("--to", f"file://{d}?name={d.name}", "--url", "http://cdn/")]
    r = call(main, [*argv, "--state", str(tmp_path / "t.db")], E.encode(ev))
    assert r.status == 0, r.stderr
    out = [E.decode(x) for x in r.stdout.splitlines()]
    assert len(out) == 1 and out[0]["error"] == "image_optimizer.Max: not a PNG"
    assert not any(d.exists() and any(d.iterdir()) for d in dests)


def test_old_name_events_live_and_after_kill_9_leave_fc_records_row_alone(tmp_path: Path, env: dict[str, str]) -> None:
    import signal
    import subprocess

    from fileconveyor.cli.record import main as record_main
    from tests.conftest import call

    from .conftest import fc

    src, work = _versions(tmp_path)
    cdn, state = tmp_path / "cdn", tmp_path / "t.db"
    args = [*fc("fc-transport"), "--to", f"file://{cdn}", "--url", "http://cdn/", "--state", str(state)]
    args += ["--delete-old-after", "1"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(jsonl([_version(src, work, 1, "created"), _version(src, work, 2)]))
    proc.stdin.flush()  # kept open: fc-transport runs on, so the old name's event comes from the live loop
    got = [proc.stdout.readline() for _ in range(3)]
    old = lines(got[2])[0]
    assert (old["remote"], old["transported"], old["superseded"]) == ("css/a_1.css", "deleted", True)
    assert tree(cdn) == {"css/a_2.css": b"version 2"}
    proc.stdin.write(jsonl([_version(src, work, 3)]))
    proc.stdin.flush()
    got.append(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)  # before a_2.css is due: its deletion is only in the state file
    proc.wait(10)
    assert tree(cdn) == {"css/a_2.css": b"version 2", "css/a_3.css": b"version 3"}

    again = transport([*args[2:]], env, b"")
    assert again.returncode == 0, again.stderr.decode()
    assert tree(cdn) == {"css/a_3.css": b"version 3"}
    # (the last line before the kill may come again: at least once)
    (ev,) = [e for e in lines(again.stdout) if e.get("superseded")]
    assert (ev["remote"], ev["transported"]) == ("css/a_2.css", "deleted")

    # fc-record takes the superseded events through without removing the file's row (its name is a_3 now)
    db = tmp_path / "synced.db"
    r = call(record_main, ["--db", str(db), "--state", str(tmp_path / "r.db")], b"".join(got) + again.stdout)
    assert r.status == 0, r.stderr
    seqs = {e["hop"]["seq"] for e in lines(b"".join(got) + again.stdout)}  # a replayed line is taken once
    assert len(r.stdout.splitlines()) == len(seqs) == 5
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT input_file, transported_file_basename, url FROM synced_files").fetchall()
    assert rows == [(str(src / "css/a.css"), "a_3.css", "http://cdn/css/a_3.css")]
