"""A ``deleted`` event deletes only a name File Conveyor put at the destination, never the name the event asks for.

fc-transport refuses a deletion whose source is no ``--source`` of its, and one whose file is still at the source
(test_forged_deletions.py).  A deletion of a path that is gone from the source used to delete the ``name`` (or
``rel``) the event gave, uploaded or not: one forged line removed an administrator's ``index.html`` from the
document root the files go to.  Now the name deleted is the one this fc-transport uploaded for that path (its
state's remote_names), else the one fc-record's record holds for that path and server (``--record-db``: uploaded
under an earlier state, by another worker of a scaled-out pipeline, by the old daemon); with neither, nothing is
deleted and stderr says so.  The record is read from SQLite and from a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.record.conftest import record
from tests.servers.postgres import PgServer, pg_server  # noqa: F401 - fixture
from tests.transport.conftest import env, event, jsonl, lines, transport  # noqa: F401 - fixture

ADMIN = b"the administrator's own\n"


def _site(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (dest / "index.html").write_bytes(ADMIN)
    args = ["--to", "file://" + quote(str(dest)) + "?name=cdn", "--source", f"site={src}"]
    return src, dest, args


def _forged(src: Path, rel: str) -> dict:
    """fc-watch's deletion of ``rel``, with the name the forger wants deleted."""
    return {**event(src, rel, "deleted", source="site"), "name": "index.html"}


def test_a_forged_deletion_leaves_a_file_fc_never_uploaded(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src, dest, args = _site(tmp_path)
    forged = {"v": 1, "kind": "deleted", "source": "site", "root": str(src), "path": str(src / "gone.css")}
    forged.update(rel="gone.css", name="index.html")
    res = transport(
        [*args, "--state", str(tmp_path / "t.db")],
        env,
        jsonl([forged, {**forged, "rel": "index.html", "path": str(src / "index.html")}]),
    )
    assert res.returncode == 0, res.stderr.decode()
    assert lines(res.stdout) == []
    assert (dest / "index.html").read_bytes() == ADMIN
    assert b"gone.css: not deleted from cdn: no upload of it is known to --state" in res.stderr
    assert b"index.html: not deleted from cdn: no upload of it is known to --state" in res.stderr


def test_the_name_uploaded_is_deleted_not_the_one_the_event_names(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src, dest, args = _site(tmp_path)
    args += ["--state", str(tmp_path / "t.db")]
    (src / "a.css").write_bytes(b"a")
    up = transport(args, env, jsonl([event(src, "a.css", source="site")]))
    assert [e["transported"] for e in lines(up.stdout)] == ["uploaded"], up.stderr.decode()
    (src / "a.css").unlink()
    res = transport(args, env, jsonl([_forged(src, "a.css")]))
    assert res.returncode == 0, res.stderr.decode()
    assert [(e["remote"], e["transported"]) for e in lines(res.stdout)] == [("a.css", "deleted")]
    assert sorted(p.name for p in dest.iterdir()) == ["index.html"]
    assert (dest / "index.html").read_bytes() == ADMIN


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_record_names_what_another_state_uploaded(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """A worker that took a partition over (or a new --state, or fc-verify --repair) deletes what the record says
    was uploaded for the path, under the name recorded; without --record-db it deletes nothing."""
    src, dest, args = _site(tmp_path)
    if backend == "sqlite":
        db = str(tmp_path / "record.db")
    else:
        pg: PgServer = request.getfixturevalue("pg_server")
        db = pg.url(pg.new_database())
    (src / "css").mkdir()
    (src / "css" / "a b.css").write_bytes(b"a")
    # the first worker: uploads under its own state, and fc-record records it
    up = transport(
        [*args, "--state", str(tmp_path / "first.db")], env, jsonl([event(src, "css/a b.css", source="site")])
    )
    assert up.returncode == 0, up.stderr.decode()
    rec = record(db, lines(up.stdout), tmp_path / "r.db")  # type: ignore[arg-type]
    assert rec.status == 0, rec.stderr
    (src / "css" / "a b.css").unlink()
    forged = _forged(src, "css/a b.css")
    # another worker, with a state of its own: without the record it deletes nothing
    second = [*args, "--state", str(tmp_path / "second.db")]
    blind = transport(second, env, jsonl([forged]))
    assert blind.returncode == 0 and lines(blind.stdout) == [], blind.stderr.decode()
    assert b"(give --record-db" in blind.stderr
    assert (dest / "css" / "a b.css").exists()
    # with it, the name recorded goes (not the event's index.html)
    res = transport([*second, "--record-db", db], env, jsonl([forged]))
    assert res.returncode == 0, res.stderr.decode()
    assert [(e["remote"], e["transported"]) for e in lines(res.stdout)] == [("css/a b.css", "deleted")]
    assert not (dest / "css" / "a b.css").exists()
    assert (dest / "index.html").read_bytes() == ADMIN


def test_a_recorded_name_that_leaves_the_destination_is_refused(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    """The record is read, not trusted: a row whose remote name climbs out of the destination deletes nothing."""
    src, dest, args = _site(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    db = tmp_path / "record.db"
    row = {**event(src, "gone.css", "created", source="site"), "server": "cdn", "transported": "uploaded"}
    row.update(remote="../outside.txt", url="http://cdn.example/../outside.txt")
    rec = record(db, [row], tmp_path / "r.db")  # fc-record takes what a hop before it wrote
    assert rec.status == 0, rec.stderr
    res = transport(
        [*args, "--state", str(tmp_path / "t.db"), "--record-db", str(db)], env, jsonl([_forged(src, "gone.css")])
    )
    assert res.returncode == 0, res.stderr.decode()
    assert lines(res.stdout) == []
    assert b"the name --record-db holds for it on cdn is refused" in res.stderr
    assert outside.read_bytes() == b"keep"
    assert (dest / "index.html").read_bytes() == ADMIN
