"""fc-transport (the command) on the cloud destinations, against the real moto server of tests/servers/s3.py:
--skip-unchanged (no PUT for an unchanged file, proven by the server's request counter), durable batched
CloudFront invalidations (one request for many changes, still sent after a kill -9), and create-distribution."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import boto3
import pytest

from fileconveyor.cli.record import main as record_main
from fileconveyor.cli.transport import main as transport_main
from fileconveyor.transporters.cf_setup import create_distribution
from tests.conftest import ROOT, call, work_dir_for
from tests.servers import s3 as s3srv

from .conftest import _unique, events_for


def _site(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "site"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _to(server: s3srv.S3Server, scheme: str, prefix: str, **settings: str) -> list[str]:
    query = "&".join(f"{k}={v}" for k, v in {"profile": s3srv.PROFILE, **settings}.items())
    return ["--to", f"{scheme}://{s3srv.BUCKET}/{prefix}?{query}", "--endpoint-url", server.endpoint]


def _out(stdout: bytes) -> dict[str, dict]:
    return {ev["rel"]: ev for ev in map(json.loads, stdout.splitlines())}


# -- --skip-unchanged ------------------------------------------------------------------------------


def test_skip_unchanged_sends_nothing_for_unchanged_files(
    s3_server: s3srv.S3Server, tmp_path: Path, state_dir: Path
) -> None:
    big = os.urandom(9 << 20)  # above multipart_mb=8: a multipart object, whose ETag is no MD5
    root = _site(tmp_path, {"css/a.css": b"a { }", "js/b.js": b"var b;", "big.bin": big})
    rels = ["css/a.css", "js/b.js", "big.bin"]
    prefix = _unique()
    argv = [*_to(s3_server, "s3", prefix, multipart_mb="8"), "--skip-unchanged", "--state", str(tmp_path / "t.db")]
    keys = {rel: f"{s3srv.BUCKET}/{prefix}/{rel}" for rel in rels}

    first = call(transport_main, argv, events_for(root, rels))
    assert first.status == 0, first.stderr
    assert {rel: ev["transported"] for rel, ev in _out(first.stdout).items()} == dict.fromkeys(rels, "uploaded")
    writes = {rel: s3_server.writes(key) for rel, key in keys.items()}
    assert writes["css/a.css"] == 1 and writes["big.bin"] >= 3  # initiate, parts, complete

    again = call(transport_main, argv, events_for(root, rels))
    assert again.status == 0, again.stderr
    outs = _out(again.stdout)
    assert {rel: ev["transported"] for rel, ev in outs.items()} == dict.fromkeys(rels, "unchanged")
    assert {rel: s3_server.writes(key) for rel, key in keys.items()} == writes  # not one PUT or POST
    for rel, ev in outs.items():  # still a full record of where the file is
        assert ev["server"] == s3srv.BUCKET and ev["remote"] == rel
        with urllib.request.urlopen(ev["url"], timeout=10) as reply:
            assert reply.read() == (root / rel).read_bytes()

    (root / "js/b.js").write_bytes(b"var b = 2;")  # same size class, new content
    changed = call(transport_main, argv, events_for(root, rels, "modified"))
    assert changed.status == 0, changed.stderr
    transported = {rel: ev["transported"] for rel, ev in _out(changed.stdout).items()}
    assert transported == {"css/a.css": "unchanged", "js/b.js": "uploaded", "big.bin": "unchanged"}
    assert s3_server.writes(keys["js/b.js"]) == writes["js/b.js"] + 1
    assert s3_server.writes(keys["css/a.css"]) == writes["css/a.css"]
    assert (s3_server.files / s3srv.BUCKET / prefix / "js/b.js").read_bytes() == b"var b = 2;"

    # fc-record takes "unchanged" as synced: the rows say where the files are
    db = tmp_path / "synced.db"
    rec = call(record_main, ["--db", str(db), "--state", str(tmp_path / "r.db")], again.stdout)
    assert rec.status == 0, rec.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT input_file, url FROM synced_files ORDER BY input_file").fetchall()
    assert sorted(Path(f).relative_to(root).as_posix() for f, _ in rows) == sorted(rels)


def test_skip_unchanged_falls_back_to_the_etag_of_a_single_put(
    s3_server: s3srv.S3Server, tmp_path: Path, state_dir: Path
) -> None:
    # An object some other tool uploaded (no fc-sha256 metadata): its plain-PUT ETag is the MD5 of the content.
    root = _site(tmp_path, {"same.txt": b"same", "other.txt": b"new content"})
    prefix = _unique()
    client = boto3.Session(profile_name=s3srv.PROFILE).client("s3", endpoint_url=s3_server.endpoint)
    client.put_object(Bucket=s3srv.BUCKET, Key=f"{prefix}/same.txt", Body=b"same")
    client.put_object(Bucket=s3srv.BUCKET, Key=f"{prefix}/other.txt", Body=b"old content")
    before = {n: s3_server.writes(f"{s3srv.BUCKET}/{prefix}/{n}") for n in ("same.txt", "other.txt")}
    argv = [*_to(s3_server, "s3", prefix), "--skip-unchanged", "--state", str(tmp_path / "t.db")]
    r = call(transport_main, argv, events_for(root, ["same.txt", "other.txt"]))
    assert r.status == 0, r.stderr
    assert {k: v["transported"] for k, v in _out(r.stdout).items()} == {
        "same.txt": "unchanged",
        "other.txt": "uploaded",
    }
    assert s3_server.writes(f"{s3srv.BUCKET}/{prefix}/same.txt") == before["same.txt"]
    assert s3_server.writes(f"{s3srv.BUCKET}/{prefix}/other.txt") == before["other.txt"] + 1


def test_skip_unchanged_on_sftp_warns_and_sends(tmp_path: Path, state_dir: Path) -> None:
    # (a file:// destination compares bytes; ftp/sftp cannot without a download: said once, files still sent)
    root = _site(tmp_path, {"a.txt": b"a"})
    cdn = tmp_path / "cdn"
    argv = ["--to", f"file://{cdn}", "--to", "sftp://nobody@127.0.0.1:1/x?agent=no", "--skip-unchanged"]
    r = call(transport_main, [*argv, "--drain-timeout", "0"], events_for(root, ["a.txt"]))
    assert "cannot compare contents" in r.stderr and "sftp://nobody@127.0.0.1:1/x" in r.stderr
    mtime = (cdn / "a.txt").stat().st_mtime_ns
    r2 = call(transport_main, [*argv[:2], "--skip-unchanged"], events_for(root, ["a.txt"]))
    assert [ev["transported"] for ev in _out(r2.stdout).values()] == ["unchanged"]
    assert (cdn / "a.txt").stat().st_mtime_ns == mtime  # not rewritten


# -- CloudFront invalidations ---------------------------------------------------------------------


def _distribution(server: s3srv.S3Server) -> str:
    return create_distribution(s3srv.BUCKET, endpoint_url=server.endpoint, profile=s3srv.PROFILE, wait=False).id


def _invalidated(server: s3srv.S3Server, dist: str) -> list[list[str]]:
    client = boto3.Session(profile_name=s3srv.PROFILE).client("cloudfront", endpoint_url=server.endpoint)
    items = client.list_invalidations(DistributionId=dist)["InvalidationList"].get("Items", [])
    batches = [client.get_invalidation(DistributionId=dist, Id=i["Id"])["Invalidation"] for i in items]
    return [b["InvalidationBatch"]["Paths"].get("Items", []) for b in batches]


def test_many_changes_make_one_invalidation_request(s3_server: s3srv.S3Server, tmp_path: Path, state_dir: Path) -> None:
    n = 60
    rels = [f"img/{i:03}.png" for i in range(n)]
    gone = [f"old/{i:03}.png" for i in range(5)]
    root = _site(tmp_path, {rel: rel.encode() for rel in rels + gone})
    dist, prefix = _distribution(s3_server), _unique()
    argv = [*_to(s3_server, "cf", prefix, distribution_id=dist, invalidate_after="60"), "--state", str(tmp_path / "t")]
    # uploaded by an earlier run, then deleted at the source (a deletion removes only what was put there, and one
    # of a file still there deletes nothing)
    assert call(transport_main, argv, events_for(root, gone)).status == 0
    for rel in gone:
        (root / rel).unlink()
    before = s3_server.stats()["invalidations"]
    r = call(transport_main, argv, events_for(root, rels) + events_for(root, gone, "deleted"))
    assert r.status == 0, r.stderr
    assert len(r.stdout.splitlines()) == n + 5
    assert s3_server.stats()["invalidations"] - before == 1  # 65 changes, one request, sent at the end of the run
    assert sorted(_invalidated(s3_server, dist)[-1]) == sorted(f"/{prefix}/{rel}" for rel in rels + gone)
    with sqlite3.connect(tmp_path / "t") as db:
        assert db.execute("SELECT count(*) FROM invalidations").fetchone() == (0,)


def test_pending_invalidations_survive_kill_9(s3_server: s3srv.S3Server, tmp_path: Path) -> None:
    rels = [f"css/{i}.css" for i in range(20)]
    root = _site(tmp_path, {rel: rel.encode() for rel in rels})
    dist, prefix = _distribution(s3_server), _unique()
    state = tmp_path / "t.db"
    env = {**os.environ, **s3_server.env, "FC_STATE_DIR": str(tmp_path / "state")}
    argv = [
        sys.executable,
        str(ROOT / "bin" / "fc-transport"),
        *_to(s3_server, "cf", prefix, distribution_id=dist, invalidate_after="3600"),
        "--state",
        str(state),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(events_for(root, rels))
    proc.stdin.flush()  # and kept open: fc-transport waits for more, its invalidations not due for an hour
    got = [proc.stdout.readline() for _ in rels]
    assert all(json.loads(line)["transported"] == "uploaded" for line in got)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert _invalidated(s3_server, dist) == []  # nothing was sent before the kill
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM invalidations").fetchone() == (len(rels),)

    again = subprocess.run(argv, input=b"", capture_output=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert [sorted(b) for b in _invalidated(s3_server, dist)] == [sorted(f"/{prefix}/{rel}" for rel in rels)]
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM invalidations").fetchone() == (0,)


def test_work_taken_over_from_a_killed_run_is_not_sent_again_but_still_purged(
    s3_server: s3srv.S3Server, tmp_path: Path, state_dir: Path
) -> None:
    """What a kill between the uploads and their commit leaves: the objects in the bucket, the events still in the
    inbox, no invalidation rows (they are written in that commit).  The restart looks first (no PUT, events say
    "unchanged") and still sends the purge, since nothing recorded the killed run's."""
    rels = [f"css/{i}.css" for i in range(5)]
    root = _site(tmp_path, {rel: rel.encode() for rel in rels})
    dist, prefix = _distribution(s3_server), _unique()
    state = tmp_path / "t.db"
    argv = [*_to(s3_server, "cf", prefix, distribution_id=dist, invalidate_after="0"), "--state", str(state)]
    first = call(transport_main, argv, events_for(root, rels))
    assert first.status == 0, first.stderr
    server = {ev["server"] for ev in _out(first.stdout).values()}.pop()
    keys = {rel: f"{s3srv.BUCKET}/{prefix}/{rel}" for rel in rels}
    writes = {rel: s3_server.writes(key) for rel, key in keys.items()}
    with sqlite3.connect(state) as db:  # the commit of the uploads undone: the events back in the inbox
        db.executemany(
            "INSERT INTO inbox(line, lane, key) VALUES (?, ?, ?)",
            [
                (line + b"\n", server, str(root / rel).encode())
                for rel, line in zip(rels, events_for(root, rels).splitlines(), strict=True)
            ],
        )
    purged = len(_invalidated(s3_server, dist))

    again = call(transport_main, argv, b"")
    assert again.status == 0, again.stderr
    assert {rel: ev["transported"] for rel, ev in _out(again.stdout).items()} == dict.fromkeys(rels, "unchanged")
    assert {rel: s3_server.writes(key) for rel, key in keys.items()} == writes  # not one PUT
    # each path purged once by each run (in as many requests as items came together)
    purges = Counter(path for batch in _invalidated(s3_server, dist) for path in batch)
    assert len(_invalidated(s3_server, dist)) > purged
    assert purges == dict.fromkeys((f"/{prefix}/{rel}" for rel in rels), 2)


# -- create-distribution ----------------------------------------------------------------------------


def _moto_transition(server: s3srv.S3Server, path: str, body: dict) -> None:
    req = urllib.request.Request(f"{server.endpoint}/moto-api/state-manager/{path}", json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=10):
        pass


@pytest.fixture
def slow_deploy(s3_server: s3srv.S3Server):  # type: ignore[no-untyped-def]
    """Distributions stay InProgress for ``times`` status polls, as on AWS for minutes."""

    def slow(times: int) -> None:
        transition = {"progression": "manual", "times": times}
        _moto_transition(
            s3_server, "set-transition", {"model_name": "cloudfront::distribution", "transition": transition}
        )

    yield slow
    _moto_transition(s3_server, "unset-transition", {"model_name": "cloudfront::distribution"})


def test_create_distribution_command_waits_until_deployed(s3_server: s3srv.S3Server, slow_deploy) -> None:  # type: ignore[no-untyped-def]
    slow_deploy(3)
    argv = ["create-distribution", s3srv.BUCKET, "--endpoint-url", s3_server.endpoint, "--profile", s3srv.PROFILE]
    r = call(transport_main, [*argv, "--poll", "0.05"])
    assert r.status == 0, r.stderr
    fields = dict(line.split(None, 1) for line in r.stdout.decode().splitlines())
    assert fields["status"] == "Deployed" and fields["domain"].endswith(".cloudfront.net")
    assert fields["origin"] == f"{s3srv.BUCKET}.s3.us-east-1.amazonaws.com"
    assert fields["to"] == f"cf://{s3srv.BUCKET}/?distribution_id={fields['id']}"
    assert "InProgress after" in r.stderr  # progress while it deploys (a line per status: stderr is no terminal)
    client = boto3.Session(profile_name=s3srv.PROFILE).client("cloudfront", endpoint_url=s3_server.endpoint)
    config = client.get_distribution(Id=fields["id"])["Distribution"]["DistributionConfig"]
    assert config["Origins"]["Items"][0]["DomainName"] == fields["origin"]


def test_create_distribution_no_wait_and_timeout(s3_server: s3srv.S3Server, slow_deploy) -> None:  # type: ignore[no-untyped-def]
    slow_deploy(10_000)
    argv = ["create-distribution", s3srv.BUCKET, "--endpoint-url", s3_server.endpoint, "--profile", s3srv.PROFILE]
    quick = call(transport_main, [*argv, "--no-wait", "--json"])
    assert quick.status == 0, quick.stderr
    assert json.loads(quick.stdout)["status"] == "InProgress"
    started = time.monotonic()
    late = call(transport_main, [*argv, "--poll", "0.05", "--timeout", "0.5"])
    assert late.status == 4 and time.monotonic() - started < 10
    assert "still InProgress" in late.stderr
    assert b"status InProgress" in late.stdout  # created all the same: its id is printed


def test_create_distribution_with_wrong_credentials_is_refused(s3_server: s3srv.S3Server) -> None:
    argv = ["create-distribution", s3srv.BUCKET, "--endpoint-url", s3_server.endpoint, "--profile", s3srv.WRONG_PROFILE]
    r = call(transport_main, argv)
    assert r.status == 3 and "refused the credentials" in r.stderr and not r.stdout

    from tests.servers.process import free_port

    down = ["create-distribution", s3srv.BUCKET, "--endpoint-url", f"http://127.0.0.1:{free_port()}"]
    r = call(transport_main, [*down, "--profile", s3srv.PROFILE])
    assert r.status == 4 and "connection failed" in r.stderr and not r.stdout  # try again later


def test_create_distribution_progress_line_on_a_terminal(s3_server: s3srv.S3Server, slow_deploy) -> None:  # type: ignore[no-untyped-def]
    import pty

    slow_deploy(4)
    master, slave = pty.openpty()
    argv = [sys.executable, str(ROOT / "bin" / "fc-transport"), "create-distribution", s3srv.BUCKET]
    argv += ["--endpoint-url", s3_server.endpoint, "--profile", s3srv.PROFILE, "--poll", "0.05"]
    env = {**os.environ, **s3_server.env}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, env=env) as proc:
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0, seen.decode(errors="replace")
    redrawn = seen.count(b"\r\x1b[K")  # the line is redrawn in place, with dots that move
    assert redrawn >= 3 and b"InProgress after" in seen and b"." in seen
    assert b"status Deployed" in out


def test_the_invalidation_queue_splits_at_1000_and_keeps_what_fails(
    cf_backend, s3_server: s3srv.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from fileconveyor.stages.transport.purge import Purger
    from tests.servers.process import free_port

    dist = cf_backend.settings["distribution_id"]
    messages: list[str] = []
    purger = Purger(lambda server: cf_backend.make(invalidate_after="3600"), messages.append, messages.append)
    purger.start()
    for i in range(1500):
        purger.add("cdn", i, f"/p/{i}")
    purger.flush(60, lambda: False)  # the first 1,000 went when the batch was full, the rest now
    assert sorted(len(b) for b in _invalidated(s3_server, dist)) == [500, 1000]
    assert sorted(purger.take_sent()) == list(range(1500)) and purger.pending() == 0
    purger.close()

    # CloudFront unreachable: nothing is reported sent, everything stays queued (for the state file's next run)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3srv.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3srv.SECRET_KEY)
    dead = f"http://127.0.0.1:{free_port()}"
    down = Purger(
        lambda server: cf_backend.make(endpoint_url=dead, timeout="2", profile=""), messages.append, messages.append
    )
    down.start()
    for i in range(3):
        down.add("cdn", i, f"/q/{i}")
    down.flush(30, lambda: False)
    assert down.take_sent() == [] and down.pending() == 3
    assert any("failed" in m for m in messages)
    down.close()


def test_old_names_deleted_later_are_invalidated_too(
    s3_server: s3srv.S3Server, tmp_path: Path, state_dir: Path
) -> None:
    root = _site(tmp_path, {"css/a.css": b"source"})
    # fc-process's work folder, and its directory for css/a.css: fc-transport sends "file" only from one
    work = work_dir_for(state_dir / "process.db.work", root / "css" / "a.css", "css/a.css")
    dist, prefix = _distribution(s3_server), _unique()
    evs = []
    for kind, n in (("created", 1), ("modified", 2)):
        (work / f"v{n}.css").write_bytes(b"one" if n == 1 else b"two")
        ev = json.loads(events_for(root, ["css/a.css"], kind))
        ev.update(name=f"a_{n}.css", file=str(work / f"v{n}.css"))
        evs.append(json.dumps(ev).encode() + b"\n")
    argv = [*_to(s3_server, "cf", prefix, distribution_id=dist, invalidate_after="60"), "--delete-old-after", "0.2"]
    r = call(transport_main, argv, b"".join(evs))
    assert r.status == 0, r.stderr
    outs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["remote"], e["transported"], e.get("superseded")) for e in outs] == [
        ("css/a_1.css", "uploaded", None),
        ("css/a_2.css", "uploaded", None),
        ("css/a_1.css", "deleted", True),
    ]
    assert not (s3_server.files / s3srv.BUCKET / prefix / "css/a_1.css").exists()
    assert [sorted(b) for b in _invalidated(s3_server, dist)] == [[f"/{prefix}/css/a_1.css", f"/{prefix}/css/a_2.css"]]
